use super::*;
use crate::model::load_cluster;

fn example(name: &str) -> Cluster {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    load_cluster(&path, None).unwrap()
}

#[test]
fn ssh_is_open_only_to_the_bastion_and_the_api_only_through_its_load_balancer() {
    let c = example("selfbuilt-ha.yaml");
    let all = rules(&c);
    let of = |id: &str| &all.iter().find(|(g, _)| *g == id).unwrap().1;
    let ssh_from = |id: &str| -> Vec<Source> {
        of(id)
            .iter()
            .filter(|r| r.ports == (22, 22))
            .map(|r| r.source.clone())
            .collect()
    };
    assert_eq!(ssh_from(MASTERS), [Source::Group(BASTION.into())]);
    assert_eq!(ssh_from(NODES), [Source::Group(BASTION.into())]);
    assert_eq!(ssh_from(BASTION), [Source::Cidr("203.0.113.0/24".parse().unwrap())]);
    let anywhere: ipnet::Ipv4Net = "0.0.0.0/0".parse().unwrap();
    for (g, rules) in &all {
        for r in rules {
            assert!(
                !(r.source == Source::Cidr(anywhere) && *g != API_LB),
                "{g}: only the API load balancer is open to the world (the spec's default API CIDR)"
            );
        }
    }
    assert!(of(MASTERS).contains(&Rule::tcp(6443, Source::Group(API_LB.into()))));
    assert!(of(MASTERS).contains(&Rule {
        protocol: "tcp",
        ports: (2379, 2380),
        source: Source::Group(MASTERS.into())
    }));
    assert!(of(NODES).contains(&Rule::tcp(10250, Source::Group(MASTERS.into()))));
}

#[test]
fn masters_go_one_per_zone_and_workers_into_auto_scaling_groups() {
    let c = example("selfbuilt-ha.yaml");
    let ids: Vec<String> = cluster_resources(&c).iter().map(|r| r.id().to_string()).collect();
    for zone in ["eu-west-1a", "eu-west-1b", "eu-west-1c"] {
        assert!(ids.contains(&format!("instance/master-{zone}")), "{ids:?}");
    }
    for id in [
        "asg/workers",
        "asg/spot",
        "load-balancer/api",
        "listener/api",
        "instance/bastion",
        "image/x86_64",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
}

/// Whether `policy` has a statement allowing `action` (a trailing `*` in a granted action matches a prefix).
fn allows(policy: &serde_json::Value, action: &str) -> bool {
    policy["Statement"].as_array().unwrap().iter().any(|s| {
        let granted: Vec<&str> = match &s["Action"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            v => v.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect(),
        };
        s["Effect"] == "Allow"
            && granted.iter().any(|g| match g.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => *g == action,
            })
    })
}

#[test]
fn master_policy_allows_what_the_cloud_controller_and_the_ebs_csi_controller_call() {
    let p = master_policy("demo");
    // The AWS cloud controller manager (cloud-provider-aws's documented controller policy): nodes, routes,
    // classic and network load balancers for Services.
    let cloud_controller = [
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeLaunchConfigurations",
        "autoscaling:DescribeTags",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTopology",
        "ec2:DescribeRegions",
        "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVolumes",
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeVpcs",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:ModifyInstanceAttribute",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:DeleteSecurityGroup",
        "ec2:CreateRoute",
        "ec2:DeleteRoute",
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:ApplySecurityGroupsToLoadBalancer",
        "elasticloadbalancing:AttachLoadBalancerToSubnets",
        "elasticloadbalancing:ConfigureHealthCheck",
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateLoadBalancerListeners",
        "elasticloadbalancing:CreateLoadBalancerPolicy",
        "elasticloadbalancing:CreateTargetGroup",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteLoadBalancerListeners",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:DescribeLoadBalancerPolicies",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DetachLoadBalancerFromSubnets",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "elasticloadbalancing:ModifyTargetGroup",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:SetLoadBalancerPoliciesForBackendServer",
        "elasticloadbalancing:SetLoadBalancerPoliciesOfListener",
        "iam:CreateServiceLinkedRole",
        "kms:DescribeKey",
    ];
    // The EBS CSI controller (aws-ebs-csi-driver's example policy, without fast snapshot restores).
    let ebs_csi = [
        "ec2:CreateSnapshot",
        "ec2:AttachVolume",
        "ec2:DetachVolume",
        "ec2:ModifyVolume",
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeInstances",
        "ec2:DescribeSnapshots",
        "ec2:DescribeTags",
        "ec2:DescribeVolumes",
        "ec2:DescribeVolumesModifications",
        "ec2:CreateTags",
        "ec2:CreateVolume",
        "ec2:DeleteVolume",
        "ec2:DeleteSnapshot",
    ];
    for a in cloud_controller.iter().chain(&ebs_csi) {
        assert!(allows(&p, a), "the master policy does not allow {a}");
    }
    // And it is not everything: the worker policy is not the master's.
    assert!(!allows(&p, "ec2:RunInstances") && !allows(&p, "iam:PassRole"));
    assert!(!allows(&node_policy(), "ec2:CreateVolume"));
}

#[test]
fn master_policy_changes_only_what_the_cluster_owns() {
    let p = master_policy("demo");
    let key = "kubernetes.io/cluster/demo";
    let mut tag_grants = 0;
    for s in p["Statement"].as_array().unwrap() {
        let actions: Vec<&str> = match &s["Action"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            v => v.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect(),
        };
        let condition = s["Condition"].to_string();
        for a in &actions {
            assert!(!a.ends_with(":*") && *a != "*", "no service-wide grant: {a}");
            let service_action = a.split(':').nth(1).unwrap();
            let reads = service_action.starts_with("Describe") || *a == "kms:DescribeKey";
            if reads || a.starts_with("autoscaling:") {
                continue;
            }
            if *a == "iam:CreateServiceLinkedRole" {
                assert!(condition.contains("elasticloadbalancing.amazonaws.com"), "{condition}");
                continue;
            }
            // Every change is scoped to the cluster: on its tagged resources, or a creation carrying its tag.
            assert!(
                condition.contains(&format!("aws:ResourceTag/{key}"))
                    || condition.contains(&format!("aws:RequestTag/{key}")),
                "{a} is not scoped to the cluster: {condition}"
            );
            // Tags are written only by a creation that carries the cluster's tag, or onto what already has it:
            // never onto another cluster's or an untagged resource.
            if *a == "ec2:CreateTags" || *a == "elasticloadbalancing:AddTags" {
                tag_grants += 1;
                assert!(
                    condition.contains(&format!("aws:ResourceTag/{key}")) || condition.contains("CreateAction"),
                    "{a}: {condition}"
                );
            }
        }
    }
    assert_eq!(
        tag_grants, 4,
        "CreateTags and AddTags: on creation and on owned resources"
    );
    let other = master_policy("other").to_string();
    assert!(!other.contains(key), "another cluster's policy names only its own tag");
}
