//! Providers turn a validated [`Cluster`] into the resources of each phase. Shared pieces (the network layer) live
//! once and are used by every provider that needs them.
//!
//! A phase a provider has not built yet is refused up front, before any cloud call, so a run never stops half-way
//! because of a missing feature.

pub mod api_lb;
pub mod asg;
pub mod asg_roll;
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

use crate::engine::{Ctx, Phase, Resource};
use crate::model::Cluster;
use crate::spec::Provider;

/// The cluster providers' up-front listing for `engine::plan`: every kind they make is an EC2/ELB/IAM/ASG/EKS kind
/// tagged with the cluster, listed once each (see `aws::inventory`).
pub fn prefetch(ctx: &Ctx) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(ctx.inventory.prefetch(&ctx.aws))
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
}
