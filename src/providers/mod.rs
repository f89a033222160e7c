//! Providers turn a validated [`Cluster`] into the resources of each phase. Shared pieces (the network layer) live
//! once and are used by every provider that needs them.
//!
//! A phase a provider has not built yet is refused up front, before any cloud call, so a run never stops half-way
//! because of a missing feature.

pub mod api_lb;
pub mod asg;
pub mod asg_roll;
pub mod classic_elb;
pub mod ec2;
pub mod eks;
pub mod eks_day2;
pub mod host_keys;
pub mod hosts;
pub mod iam;
pub mod launch_template;
pub mod machine;
pub mod network;
pub mod security_group;

use std::sync::Arc;

use crate::delete::Kind;
use crate::engine::{Ctx, Phase, Resource};
use crate::model::Cluster;
use crate::spec::Provider;

/// The cluster providers' up-front listing for `engine::plan`: every kind they make is an EC2/ELB/IAM/ASG/EKS kind
/// tagged with the cluster, listed once each (see `aws::inventory`).
pub fn prefetch(ctx: &Ctx) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(ctx.inventory.prefetch(&ctx.aws))
}

/// Every cloud kind a cluster can own, for delete (see `delete::Kind`): discovery lists them in this order, which
/// is the order of delete's report. Adding a kind is its file plus one line here.
pub fn kinds() -> Vec<Arc<dyn Kind>> {
    vec![
        Arc::new(eks::EksNodegroupKind),
        Arc::new(eks::EksFargateProfileKind),
        Arc::new(eks::EksAddonKind),
        Arc::new(eks::EksClusterKind),
        Arc::new(asg::AutoScalingGroupKind),
        Arc::new(machine::InstanceKind),
        Arc::new(eks::OidcProviderKind),
        Arc::new(launch_template::LaunchTemplateKind),
        Arc::new(api_lb::LoadBalancerKind),
        Arc::new(api_lb::TargetGroupKind),
        Arc::new(classic_elb::ClassicLoadBalancerKind),
        Arc::new(network::NetworkInterfaceKind),
        Arc::new(network::NatGatewayKind),
        Arc::new(network::ElasticIpKind),
        Arc::new(network::InternetGatewayKind),
        Arc::new(network::RouteTableKind),
        Arc::new(security_group::SecurityGroupKind),
        Arc::new(network::SubnetKind),
        Arc::new(network::VpcKind),
        Arc::new(machine::KeyPairKind),
        Arc::new(machine::InstanceProfileKind),
        Arc::new(iam::IamRoleKind),
    ]
}

/// The phases a full `create` of this provider goes through, in order.
pub fn phases(provider: Provider) -> &'static [Phase] {
    match provider {
        Provider::Eks => &[Phase::Network, Phase::Security, Phase::Cluster],
        Provider::Ec2 => &[Phase::Network, Phase::Security, Phase::Cluster, Phase::Bootstrap],
        Provider::Hosts => &[Phase::Bootstrap],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("provider {provider} has no {phase} phase\n  hint: its phases are {}", list(.provider))]
    NotAPhase { provider: Provider, phase: Phase },
}

fn list(p: &Provider) -> String {
    phases(*p).iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// The phases a run covers: those asked for (`--phase network,security`), or all of the provider's.
pub fn selected_phases(provider: Provider, only: &[Phase]) -> Result<Vec<Phase>, PhaseError> {
    let all = phases(provider);
    if let Some(p) = only.iter().find(|p| !all.contains(p)) {
        return Err(PhaseError::NotAPhase { provider, phase: *p });
    }
    let mut wanted: Vec<Phase> = if only.is_empty() { all.to_vec() } else { only.to_vec() };
    wanted.sort();
    wanted.dedup();
    Ok(wanted)
}

/// Every resource of the phases up to the last selected one: earlier phases are read (their outputs feed later
/// ones), selected ones are reconciled.
pub fn resources(cluster: &Cluster, selected: &[Phase]) -> Vec<Arc<dyn Resource>> {
    let last = selected.iter().max().copied().unwrap_or(Phase::Network);
    let mut out = Vec::new();
    if let Some(net) = &cluster.network
        && last >= Phase::Network
    {
        out.extend(network::resources(&cluster.name, net, &cluster.tags));
    }
    if cluster.provider == Provider::Eks && last >= Phase::Security {
        out.extend(eks::security_resources(cluster));
    }
    if cluster.provider == Provider::Eks && last >= Phase::Cluster {
        out.extend(eks::cluster_resources(cluster));
    }
    if cluster.provider == Provider::Ec2 && last >= Phase::Security {
        out.extend(ec2::security_resources(cluster));
    }
    if cluster.provider == Provider::Ec2 && last >= Phase::Cluster {
        out.extend(ec2::cluster_resources(cluster));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delete::{Doomed, deletion_deps};

    #[test]
    fn phases_are_selected_and_foreign_ones_refused() {
        assert_eq!(
            selected_phases(Provider::Eks, &[]).unwrap(),
            [Phase::Network, Phase::Security, Phase::Cluster]
        );
        assert_eq!(
            selected_phases(Provider::Eks, &[Phase::Security, Phase::Network]).unwrap(),
            [Phase::Network, Phase::Security]
        );
        // Self-built clusters have every phase.
        assert_eq!(selected_phases(Provider::Ec2, &[]).unwrap(), Phase::ALL);
        let e = selected_phases(Provider::Eks, &[Phase::Bootstrap])
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider eks has no bootstrap phase"), "{e}");
        let e = selected_phases(Provider::Hosts, &[Phase::Network])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no network phase"), "{e}");
        assert_eq!(selected_phases(Provider::Hosts, &[]).unwrap(), [Phase::Bootstrap]);
        assert_eq!(
            selected_phases(Provider::Hosts, &[Phase::Bootstrap]).unwrap(),
            [Phase::Bootstrap]
        );
    }

    /// An object of the registered kind `name`, as discovery would list it.
    fn d(name: &str, id: &str, vpc: &str) -> Doomed {
        let kind = kinds()
            .into_iter()
            .find(|k| k.name() == name)
            .expect("a registered kind");
        Doomed::new(&kind, id, None, Some(vpc))
    }

    #[test]
    fn every_kind_an_order_names_is_registered_once() {
        let all = kinds();
        assert_eq!(crate::delete::unknown_orders(&all), Vec::<String>::new());
        let mut names: Vec<&str> = all.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "two kinds share a name");
    }

    #[test]
    fn vpc_goes_last_and_nat_first() {
        let all = vec![
            d("vpc", "vpc-1", "vpc-1"),
            d("subnet", "subnet-1", "vpc-1"),
            d("nat-gateway", "nat-1", "vpc-1"),
            d("elastic-ip", "eipalloc-1", ""),
            d("route-table", "rtb-1", "vpc-1"),
            d("subnet", "subnet-9", "vpc-9"),
        ];
        let deps = |i: usize| deletion_deps(&all[i], &all);
        assert_eq!(deps(0), ["subnet subnet-1", "nat-gateway nat-1", "route-table rtb-1"]);
        assert_eq!(deps(1), ["nat-gateway nat-1", "route-table rtb-1"]);
        assert!(deps(2).is_empty());
        assert_eq!(deps(3), ["nat-gateway nat-1"]);
        assert!(deps(5).is_empty(), "a subnet of another VPC waits for nothing here");
    }

    #[test]
    fn eks_goes_workers_then_addons_then_cluster_then_roles_and_kubernetes_leftovers() {
        let all = vec![
            d("eks-nodegroup", "workers", "vpc-1"),
            d("eks-fargate-profile", "serverless", "vpc-1"),
            d("eks-addon", "coredns", "vpc-1"),
            d("eks-cluster", "demo", "vpc-1"),
            d("iam-oidc-provider", "arn:oidc", ""),
            d("iam-role", "kforge-demo-node", ""),
            d("load-balancer", "arn:lb", "vpc-1"),
            d("target-group", "arn:tg", "vpc-1"),
            d("network-interface", "eni-1", "vpc-1"),
            d("security-group", "sg-k8s", "vpc-1"),
            d("subnet", "subnet-1", "vpc-1"),
        ];
        let deps = |i: usize| deletion_deps(&all[i], &all);
        assert!(
            deps(0).is_empty() && deps(1).is_empty(),
            "nodegroups and Fargate profiles go first, together"
        );
        assert_eq!(deps(2), ["eks-nodegroup workers", "eks-fargate-profile serverless"]);
        assert_eq!(
            deps(3),
            [
                "eks-nodegroup workers",
                "eks-fargate-profile serverless",
                "eks-addon coredns"
            ]
        );
        assert_eq!(deps(4), ["eks-cluster demo"]);
        assert!(
            deps(5).contains(&"eks-cluster demo".to_string()),
            "roles outlive what assumes them"
        );
        assert_eq!(deps(6), ["eks-cluster demo"], "the service controller is gone first");
        assert_eq!(deps(7), ["eks-cluster demo", "load-balancer arn:lb"]);
        for leftover in ["load-balancer arn:lb", "network-interface eni-1", "eks-cluster demo"] {
            assert!(
                deps(9).contains(&leftover.to_string()),
                "security group after {leftover}"
            );
            assert!(deps(10).contains(&leftover.to_string()), "subnet after {leftover}");
        }
    }
}
