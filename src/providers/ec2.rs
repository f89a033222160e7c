//! Provider ec2 (self-built, kops-style): the security phase (security groups and their rules, the SSH key pair,
//! IAM roles and instance profiles for masters and nodes) and the cluster phase (machine images, launch
//! templates, one master per zone, an Auto Scaling group per worker group, the API load balancer when there are
//! several masters, the bastion). The machines are then handed to the bootstrap as a list of hosts (`hosts`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::aws::tags::{self, Tagger};
use crate::engine::{Phase, Resource};
use crate::model::{Cluster, MachineImage, NodeGroup, Volume};
use crate::providers::api_lb::{ApiListener, ApiLoadBalancer, ApiTargetGroup, ApiTargets, elb_name};
use crate::providers::asg::AutoScalingGroupRes;
use crate::providers::iam::IamRole;
use crate::providers::launch_template::{LaunchTemplate, MachineSettings};
use crate::providers::machine::{InstanceProfileRes, KeyPair, Machine, MachineImageRes, architecture};
use crate::providers::security_group::{Rule, SecurityGroupRes, SecurityGroupRules, Source};
use crate::spec::{SubnetType, Topology};

/// Tag naming what a machine is to the cluster: `master`, `worker` or `bastion`.
pub const ROLE_TAG: &str = "kforge.dev/role";
/// Tag naming a worker's instance group.
pub const GROUP_TAG: &str = "kforge.dev/node-group";

/// cloud-init settings that make every machine print its SSH host keys (fingerprints and public keys) to the
/// serial console, where kforge reads them before its first SSH connection. These are cloud-init's defaults on
/// Amazon Linux and Ubuntu, written out so an image that changed them still prints; nothing here is secret.
pub const USER_DATA: &str = "#cloud-config
# kforge: print the SSH host keys to the console so they can be verified before the first login.
ssh_genkeytypes: [ed25519, ecdsa, rsa]
ssh_fp_console_blacklist: []
ssh_key_console_blacklist: []
ssh:
  emit_keys_to_console: true
";

const MASTERS: &str = "security-group/masters";
const NODES: &str = "security-group/nodes";
const API_LB: &str = "security-group/api-lb";
const BASTION: &str = "security-group/bastion";
const KEY_PAIR: &str = "key-pair";

/// Name of IAM roles and instance profiles: `kforge-CLUSTER-WHICH`.
fn iam_name(cluster: &str, which: &str) -> String {
    format!("kforge-{cluster}-{which}")
}

fn tagger(cluster: &Cluster) -> Tagger {
    Tagger {
        cluster: cluster.name.clone(),
        extra: cluster.tags.clone(),
    }
}

fn uses_api_lb(cluster: &Cluster) -> bool {
    cluster.control_plane.as_ref().is_some_and(|cp| cp.count > 1)
}

/// Ingress of each security group. Kubernetes needs: the API (6443) from nodes, masters, the load balancer and
/// the admins' CIDRs; etcd (2379-2380) and the kubelet (10250) between masters; the kubelet and the overlay network
/// (VXLAN 8472) from masters to nodes; anything between nodes (pods); SSH only from `ssh.allowedCidrs`, or from the
/// bastion when there is one (then only the bastion takes SSH from those CIDRs).
fn rules(cluster: &Cluster) -> Vec<(&'static str, Vec<Rule>)> {
    let g = |id: &str| Source::Group(id.to_string());
    let cidrs = |list: &[ipnet::Ipv4Net]| list.iter().map(|c| Source::Cidr(*c)).collect::<Vec<_>>();
    let ssh_sources: Vec<Source> = if cluster.ssh.bastion.is_some() {
        vec![g(BASTION)]
    } else {
        cidrs(&cluster.ssh.allowed_cidrs)
    };
    let api_cidrs = cidrs(
        cluster
            .control_plane
            .as_ref()
            .map(|cp| cp.api_allowed_cidrs.as_slice())
            .unwrap_or_default(),
    );
    let lb = uses_api_lb(cluster);

    let mut masters = vec![
        Rule::tcp(6443, g(MASTERS)),
        Rule::tcp(6443, g(NODES)),
        Rule {
            protocol: "tcp",
            ports: (2379, 2380),
            source: g(MASTERS),
        },
        Rule::tcp(10250, g(MASTERS)),
        Rule {
            protocol: "udp",
            ports: (8472, 8472),
            source: g(MASTERS),
        },
        Rule {
            protocol: "udp",
            ports: (8472, 8472),
            source: g(NODES),
        },
    ];
    if lb {
        masters.push(Rule::tcp(6443, g(API_LB)));
    } else {
        masters.extend(api_cidrs.iter().cloned().map(|s| Rule::tcp(6443, s)));
    }
    masters.extend(ssh_sources.iter().cloned().map(|s| Rule::tcp(22, s)));

    let mut nodes = vec![
        Rule {
            protocol: "all",
            ports: (0, 0),
            source: g(NODES),
        },
        Rule::tcp(10250, g(MASTERS)),
        Rule {
            protocol: "udp",
            ports: (8472, 8472),
            source: g(MASTERS),
        },
    ];
    nodes.extend(ssh_sources.iter().cloned().map(|s| Rule::tcp(22, s)));

    let mut out = vec![(MASTERS, masters), (NODES, nodes)];
    if lb {
        out.push((API_LB, api_cidrs.into_iter().map(|s| Rule::tcp(6443, s)).collect()));
    }
    if cluster.ssh.bastion.is_some() {
        out.push((
            BASTION,
            cidrs(&cluster.ssh.allowed_cidrs)
                .into_iter()
                .map(|s| Rule::tcp(22, s))
                .collect(),
        ));
    }
    out
}

/// What the masters need from AWS: the AWS cloud controller (instances, routes, load balancers for Services of
/// type LoadBalancer) and the EBS CSI controller (volumes). Reads are unscoped. Everything that changes AWS is
/// scoped to the cluster, as the AWS cloud provider's and EBS CSI driver's documented policies do: creations must
/// carry the cluster's tag (`aws:RequestTag`), tags may be written only by those creations (`ec2:CreateAction`) or
/// onto what already carries it, and changes to existing EC2 objects and load balancers need the tag on them
/// (`aws:ResourceTag`). So the role cannot mark someone else's resource as the cluster's, then change it.
pub fn master_policy(cluster: &str) -> serde_json::Value {
    let key = tags::kubernetes_cluster_key(cluster);
    let owned = serde_json::json!({"StringLike": {format!("aws:ResourceTag/{key}"): "*"}});
    let requested = serde_json::json!({"StringLike": {format!("aws:RequestTag/{key}"): "*"}});
    let creating = serde_json::json!({
        "StringEquals": {"ec2:CreateAction": ["CreateVolume", "CreateSnapshot", "CreateSecurityGroup"]},
        "StringLike": {format!("aws:RequestTag/{key}"): "*"}
    });
    let lb_creating = serde_json::json!({
        "StringEquals": {"elasticloadbalancing:CreateAction": ["CreateLoadBalancer", "CreateTargetGroup"]},
        "StringLike": {format!("aws:RequestTag/{key}"): "*"}
    });
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Read",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeTags",
                    "ec2:DescribeAvailabilityZones", "ec2:DescribeInstances", "ec2:DescribeInstanceTopology",
                    "ec2:DescribeRegions", "ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSnapshots", "ec2:DescribeSubnets", "ec2:DescribeTags", "ec2:DescribeVolumes",
                    "ec2:DescribeVolumesModifications", "ec2:DescribeVpcs", "ec2:DescribeInstanceTypes",
                    "autoscaling:DescribeLaunchConfigurations",
                    "elasticloadbalancing:Describe*", "kms:DescribeKey"
                ],
                "Resource": "*"
            },
            {
                "Sid": "CreateTagged",
                "Effect": "Allow",
                "Action": ["ec2:CreateVolume", "ec2:CreateSnapshot", "ec2:CreateSecurityGroup"],
                "Resource": "*",
                "Condition": requested
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "*",
                "Condition": creating
            },
            {
                "Sid": "ChangeOwned",
                "Effect": "Allow",
                "Action": [
                    "ec2:CreateTags", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume", "ec2:ModifyVolume",
                    "ec2:DeleteSnapshot", "ec2:ModifyInstanceAttribute",
                    "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
                    "ec2:CreateRoute", "ec2:DeleteRoute"
                ],
                "Resource": "*",
                "Condition": owned
            },
            {
                "Sid": "CreateServiceLoadBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
                "Resource": "*",
                "Condition": requested
            },
            {
                "Sid": "TagServiceLoadBalancersOnCreate",
                "Effect": "Allow",
                "Action": "elasticloadbalancing:AddTags",
                "Resource": "*",
                "Condition": lb_creating
            },
            {
                "Sid": "ChangeServiceLoadBalancers",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:AddTags", "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                    "elasticloadbalancing:SetSecurityGroups",
                    // Classic load balancers (the cloud controller's default for a Service of type LoadBalancer).
                    "elasticloadbalancing:ApplySecurityGroupsToLoadBalancer",
                    "elasticloadbalancing:AttachLoadBalancerToSubnets",
                    "elasticloadbalancing:DetachLoadBalancerFromSubnets",
                    "elasticloadbalancing:ConfigureHealthCheck",
                    "elasticloadbalancing:CreateLoadBalancerListeners",
                    "elasticloadbalancing:DeleteLoadBalancerListeners",
                    "elasticloadbalancing:CreateLoadBalancerPolicy",
                    "elasticloadbalancing:SetLoadBalancerPoliciesForBackendServer",
                    "elasticloadbalancing:SetLoadBalancerPoliciesOfListener",
                    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer"
                ],
                "Resource": "*",
                "Condition": owned
            },
            {
                "Sid": "ElbServiceRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}
            }
        ]
    })
}

/// What a worker needs: the kubelet's AWS lookups of its own instance. (Image pulls from ECR come from the managed
/// AmazonEC2ContainerRegistryReadOnly policy.)
pub fn node_policy() -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "Read",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeRegions", "ec2:DescribeAvailabilityZones"],
            "Resource": "*"
        }]
    })
}

pub fn security_resources(cluster: &Cluster) -> Vec<Arc<dyn Resource>> {
    let tagger = tagger(cluster);
    let mut out: Vec<Arc<dyn Resource>> = Vec::new();
    let groups = rules(cluster);
    let group_ids: Vec<String> = groups.iter().map(|(id, _)| id.to_string()).collect();
    for (id, rules) in groups {
        let which = id.rsplit('/').next().unwrap_or(id);
        out.push(Arc::new(SecurityGroupRes {
            id: id.into(),
            name: format!("kforge-{}-{which}", cluster.name),
            description: format!("kforge cluster {}: {which}", cluster.name),
            tags: tagger.tags(id, &[]),
            deps: vec!["vpc".into()],
        }));
        let rules_id = format!("security-group-rules/{which}");
        out.push(Arc::new(SecurityGroupRules {
            id: rules_id,
            group: id.into(),
            rules,
            deps: group_ids.clone(),
        }));
    }
    if let Some(key) = &cluster.ssh.public_key {
        out.push(Arc::new(KeyPair {
            id: KEY_PAIR.into(),
            name: format!("kforge-{}", cluster.name),
            public_key: key.clone(),
            tags: tagger.tags(KEY_PAIR, &[]),
            deps: Vec::new(),
        }));
    }
    let roles = [
        ("master", Some(master_policy(&cluster.name))),
        ("node", Some(node_policy())),
    ];
    for (which, policy) in roles {
        let role_id = format!("role/{which}");
        out.push(Arc::new(IamRole {
            id: role_id.clone(),
            name: iam_name(&cluster.name, which),
            cluster: cluster.name.clone(),
            service: "ec2.amazonaws.com".into(),
            managed_policies: vec!["AmazonEC2ContainerRegistryReadOnly".into()],
            inline_policy: policy,
            tags: tagger.tags(&role_id, &[]),
            deps: Vec::new(),
        }));
        let profile_id = format!("instance-profile/{which}");
        out.push(Arc::new(InstanceProfileRes {
            id: profile_id.clone(),
            name: iam_name(&cluster.name, which),
            cluster: cluster.name.clone(),
            role: role_id.clone(),
            tags: tagger.tags(&profile_id, &[]),
            deps: vec![role_id],
        }));
    }
    out
}

/// Subnet resource of a zone and kind.
fn subnet(kind: SubnetType, zone: &str) -> String {
    format!("subnet/{kind}-{zone}")
}

/// The subnets machines live in: private ones in the private topology.
fn machine_subnet_kind(cluster: &Cluster) -> SubnetType {
    match cluster.network.as_ref().map(|n| n.topology) {
        Some(Topology::Private) => SubnetType::Private,
        _ => SubnetType::Public,
    }
}

fn subnets_of(cluster: &Cluster, kind: SubnetType) -> Vec<String> {
    cluster
        .network
        .iter()
        .flat_map(|n| n.subnets.iter())
        .filter(|s| s.kind == kind)
        .map(|s| format!("subnet/{}", s.name()))
        .collect()
}

/// A launch template for one kind of machine, and the resources it reads.
struct TemplateWanted<'a> {
    which: &'a str,
    /// The template's AWS name.
    name: String,
    arch: &'static str,
    instance_type: Option<String>,
    profile: Option<&'a str>,
    groups: Vec<&'static str>,
    volume: Volume,
    instance_tags: BTreeMap<String, String>,
}

fn template(tagger: &Tagger, t: TemplateWanted<'_>) -> Arc<dyn Resource> {
    let id = format!("launch-template/{}", t.which);
    let image = format!("image/{}", t.arch);
    let mut deps = vec![image.clone(), KEY_PAIR.to_string()];
    deps.extend(t.groups.iter().map(|g| g.to_string()));
    let profile = t.profile.map(|p| format!("instance-profile/{p}"));
    deps.extend(profile.clone());
    Arc::new(LaunchTemplate {
        id: id.clone(),
        phase: Phase::Cluster,
        name: t.name,
        root_device: String::new(),
        volume: t.volume,
        tags: tagger.tags(&id, &[]),
        machine: Some(MachineSettings {
            image,
            instance_type: t.instance_type,
            key_pair: KEY_PAIR.into(),
            instance_profile: profile,
            security_groups: t.groups.iter().map(|g| g.to_string()).collect(),
            user_data: USER_DATA.into(),
            instance_tags: t.instance_tags,
        }),
        deps,
    })
}

/// Tags of machines launched from a template (an instance resource adds its own logical id on top).
fn machine_tags(tagger: &Tagger, name: &str, role: &str, group: Option<&str>) -> BTreeMap<String, String> {
    let mut t = tagger.tags(name, &[(ROLE_TAG, role)]);
    t.remove(tags::RESOURCE);
    if let Some(g) = group {
        t.insert(GROUP_TAG.into(), g.into());
    }
    t.insert("Name".into(), format!("{}-{name}", tagger.cluster));
    t
}

fn master_volume() -> Volume {
    Volume {
        size_gib: 64,
        kind: "gp3".into(),
        encrypted: true,
        iops: None,
        throughput: None,
    }
}

/// Tags that tell the cluster autoscaler about a group it may scale from zero (its labels and taints).
fn autoscaler_tags(cluster: &str, g: &NodeGroup) -> Vec<(String, String)> {
    let mut out = vec![
        ("k8s.io/cluster-autoscaler/enabled".to_string(), "true".to_string()),
        (format!("k8s.io/cluster-autoscaler/{cluster}"), "owned".to_string()),
    ];
    for (k, v) in &g.labels {
        out.push((format!("k8s.io/cluster-autoscaler/node-template/label/{k}"), v.clone()));
    }
    for t in &g.taints {
        out.push((
            format!("k8s.io/cluster-autoscaler/node-template/taint/{}", t.key),
            format!("{}:{:?}", t.value.clone().unwrap_or_default(), t.effect),
        ));
    }
    out
}

pub fn cluster_resources(cluster: &Cluster) -> Vec<Arc<dyn Resource>> {
    let tagger = tagger(cluster);
    let mut out: Vec<Arc<dyn Resource>> = Vec::new();
    let image = cluster.image.clone().unwrap_or(MachineImage::Al2023);
    let mut archs: Vec<&'static str> = Vec::new();
    let mut need_arch = |t: &str| {
        let a = architecture(t);
        if !archs.contains(&a) {
            archs.push(a);
        }
        a
    };
    let machine_kind = machine_subnet_kind(cluster);
    let zones: Vec<String> = cluster.network.as_ref().map(|n| n.zones.clone()).unwrap_or_default();

    let mut masters = Vec::new();
    if let Some(cp) = &cluster.control_plane {
        let arch = need_arch(&cp.instance_type);
        out.push(template(
            &tagger,
            TemplateWanted {
                which: "masters",
                name: format!("kforge-{}-masters", cluster.name),
                arch,
                instance_type: Some(cp.instance_type.clone()),
                profile: Some("master"),
                groups: vec![MASTERS],
                volume: master_volume(),
                instance_tags: machine_tags(&tagger, "master", "master", None),
            },
        ));
        // One master per zone, in zone order: etcd keeps its quorum when a zone fails.
        for zone in zones.iter().take(cp.count as usize) {
            let id = format!("instance/master-{zone}");
            let subnet = subnet(machine_kind, zone);
            let mut tags = machine_tags(&tagger, &format!("master-{zone}"), "master", None);
            tags.insert(tags::RESOURCE.into(), id.clone());
            out.push(Arc::new(Machine {
                id: id.clone(),
                instance_type: cp.instance_type.clone(),
                subnet: subnet.clone(),
                launch_template: "launch-template/masters".into(),
                instance_profile: Some(iam_name(&cluster.name, "master")),
                tags,
                deps: vec![
                    subnet,
                    "launch-template/masters".into(),
                    "instance-profile/master".into(),
                    "security-group-rules/masters".into(),
                ],
            }));
            masters.push(id);
        }
    }

    for g in &cluster.node_groups {
        let arch = need_arch(g.instance_types.first().map(String::as_str).unwrap_or("m5.large"));
        let mixed = g.spot || g.instance_types.len() > 1;
        let lt = format!("launch-template/{}", g.name);
        out.push(template(
            &tagger,
            TemplateWanted {
                which: &g.name,
                name: crate::model::group_resource_name(&cluster.name, &g.name),
                arch,
                instance_type: (!mixed).then(|| g.instance_types[0].clone()),
                profile: Some("node"),
                groups: vec![NODES],
                volume: g.volume.clone(),
                instance_tags: machine_tags(&tagger, &g.name, "worker", Some(&g.name)),
            },
        ));
        let id = format!("asg/{}", g.name);
        let subnets = subnets_of(cluster, g.subnets);
        let mut tags = tagger.tags(&id, &[(ROLE_TAG, "worker"), (GROUP_TAG, &g.name)]);
        tags.insert("Name".into(), format!("{}-{}", cluster.name, g.name));
        for (k, v) in autoscaler_tags(&cluster.name, g) {
            tags.insert(k, v);
        }
        let propagated = vec![
            "Name".to_string(),
            tags::CLUSTER.into(),
            tags::MANAGED_BY.into(),
            tags::kubernetes_cluster_key(&cluster.name),
            ROLE_TAG.into(),
            GROUP_TAG.into(),
        ];
        let mut deps = subnets.clone();
        deps.push(lt.clone());
        deps.push("security-group-rules/nodes".into());
        out.push(Arc::new(AutoScalingGroupRes {
            id,
            name: crate::model::group_resource_name(&cluster.name, &g.name),
            group: g.clone(),
            launch_template: lt,
            subnets,
            tags,
            propagated,
            deps,
        }));
    }

    if uses_api_lb(cluster) {
        let public = subnets_of(cluster, SubnetType::Public);
        let internal = public.is_empty();
        let lb_subnets = if internal {
            subnets_of(cluster, SubnetType::Private)
        } else {
            public
        };
        let mut deps = lb_subnets.clone();
        deps.push(API_LB.into());
        out.push(Arc::new(ApiLoadBalancer {
            id: "load-balancer/api".into(),
            name: elb_name(&cluster.name, "api"),
            internal,
            subnets: lb_subnets,
            security_group: API_LB.into(),
            tags: tagger.tags("load-balancer/api", &[]),
            deps,
        }));
        out.push(Arc::new(ApiTargetGroup {
            id: "target-group/api".into(),
            name: elb_name(&cluster.name, "api-tg"),
            vpc: "vpc".into(),
            tags: tagger.tags("target-group/api", &[]),
            deps: vec!["vpc".into()],
        }));
        out.push(Arc::new(ApiListener {
            id: "listener/api".into(),
            load_balancer: "load-balancer/api".into(),
            target_group: "target-group/api".into(),
            tags: tagger.tags("listener/api", &[]),
            deps: vec!["load-balancer/api".into(), "target-group/api".into()],
        }));
        let mut deps = vec!["target-group/api".to_string()];
        deps.extend(masters.iter().cloned());
        out.push(Arc::new(ApiTargets {
            id: "targets/api".into(),
            target_group: "target-group/api".into(),
            masters: masters.clone(),
            deps,
        }));
    }

    if let (Some(b), Some(zone)) = (&cluster.ssh.bastion, zones.first()) {
        let arch = need_arch(&b.instance_type);
        out.push(template(
            &tagger,
            TemplateWanted {
                which: "bastion",
                name: format!("kforge-{}-bastion", cluster.name),
                arch,
                instance_type: Some(b.instance_type.clone()),
                profile: None,
                groups: vec![BASTION],
                volume: Volume {
                    size_gib: 16,
                    ..master_volume()
                },
                instance_tags: machine_tags(&tagger, "bastion", "bastion", None),
            },
        ));
        let subnet = subnet(SubnetType::Public, zone);
        let mut tags = machine_tags(&tagger, "bastion", "bastion", None);
        tags.insert(tags::RESOURCE.into(), "instance/bastion".into());
        out.push(Arc::new(Machine {
            id: "instance/bastion".into(),
            instance_type: b.instance_type.clone(),
            subnet: subnet.clone(),
            launch_template: "launch-template/bastion".into(),
            instance_profile: None,
            tags,
            deps: vec![
                subnet,
                "launch-template/bastion".into(),
                "security-group-rules/bastion".into(),
            ],
        }));
    }

    for arch in archs {
        out.push(Arc::new(MachineImageRes {
            id: format!("image/{arch}"),
            image: image.clone(),
            arch,
            deps: Vec::new(),
        }));
    }
    out
}

#[cfg(test)]
mod tests;
