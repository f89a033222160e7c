//! The control plane and node groups (`spec.controlPlane`, `spec.nodeGroups`): sizes, instance types, labels,
//! taints, volumes; types and validation.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct ControlPlane {
    pub count: u32,
    pub instance_type: String,
    pub api_allowed_cidrs: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    pub name: String,
    pub instance_types: Vec<String>,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_size: u32,
    pub spot: bool,
    pub gpu: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub volume: Volume,
    pub subnets: SubnetType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// As kubectl and the kubelet's `--register-with-taints` write it: `key[=value]:Effect`.
impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}:{:?}", self.key, self.effect),
            None => write!(f, "{}:{:?}", self.key, self.effect),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub size_gib: u32,
    pub kind: String,
    pub encrypted: bool,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

/// The AWS name of what kforge makes for node group `group` of `cluster` (its launch template, its Auto Scaling
/// group): `kforge-CLUSTER.GROUP`. Both are DNS labels, which hold no dot, so two clusters never get one name
/// (with a dash, `aa` + `bb-cc` and `aa-bb` + `cc` did). Resources are found by their tags, not by name: what an
/// earlier version created as `kforge-CLUSTER-GROUP` keeps its name.
pub fn group_resource_name(cluster: &str, group: &str) -> String {
    format!("kforge-{cluster}.{group}")
}

pub(super) fn node_groups(
    c: &mut Checker,
    spec: Option<&[NodeGroupSpec]>,
    provider: Provider,
    topology: Topology,
) -> Vec<NodeGroup> {
    if provider == Provider::Hosts {
        if spec.is_some() {
            c.err(
                "spec.nodeGroups",
                "provider hosts takes its workers from spec.hosts",
                "remove spec.nodeGroups and list worker hosts",
            );
        }
        return Vec::new();
    }
    let default_group = [NodeGroupSpec {
        name: "ng-1".into(),
        instance_type: None,
        instance_types: None,
        min_size: Some(2),
        max_size: Some(2),
        desired_size: Some(2),
        spot: None,
        gpu: None,
        labels: None,
        taints: None,
        volume: None,
        subnets: None,
    }];
    let spec = spec.unwrap_or(&default_group);
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, g) in spec.iter().enumerate() {
        let path = format!("spec.nodeGroups[{i}]");
        if !is_dns_label(&g.name, 63) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid group name", g.name),
                "use lowercase letters, digits and '-', starting with a letter",
            );
        }
        if !names.insert(g.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("group `{}` is defined twice", g.name),
                "give each group its own name",
            );
        }
        // The masters' and the bastion's launch templates are `launch-template/masters` and `/bastion`.
        if provider == Provider::Ec2 && ["masters", "bastion"].contains(&g.name.as_str()) {
            c.err(
                format!("{path}.name"),
                format!("`{}` is the name of kforge's own machines in an ec2 cluster", g.name),
                "give the group another name, such as workers",
            );
        }
        let spot = g.spot.unwrap_or(false);
        let gpu = g.gpu.unwrap_or(false);
        let instance_types = match (&g.instance_type, &g.instance_types) {
            (Some(_), Some(_)) => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "instanceType and instanceTypes exclude each other",
                    "use one of them",
                );
                Vec::new()
            }
            (Some(t), None) => vec![t.clone()],
            (None, Some(ts)) if ts.is_empty() => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "empty list",
                    "list at least one instance type",
                );
                Vec::new()
            }
            (None, Some(ts)) => ts.clone(),
            (None, None) if spot => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "a spot group needs its instance types stated",
                    "list several similar types (e.g. [m5.large, m5a.large, m6i.large]) so spot capacity can be found",
                );
                Vec::new()
            }
            (None, None) if gpu => {
                c.err(
                    format!("{path}.instanceTypes"),
                    "a GPU group needs its instance types stated",
                    "list GPU types such as g5.xlarge",
                );
                Vec::new()
            }
            (None, None) => vec![DEFAULT_INSTANCE_TYPE.into()],
        };
        for (j, t) in instance_types.iter().enumerate() {
            let valid = t.split_once('.').is_some_and(|(f, s)| {
                !f.is_empty()
                    && !s.is_empty()
                    && f.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            let field = if g.instance_type.is_some() {
                format!("{path}.instanceType")
            } else {
                format!("{path}.instanceTypes[{j}]")
            };
            if !valid {
                c.err(
                    &field,
                    format!("`{t}` is not an instance type"),
                    "instance types look like m5.large",
                );
            } else if gpu && !is_gpu_type(t) {
                c.err(
                    &field,
                    format!("`{t}` has no GPU"),
                    "use a GPU family such as g5, g6 or p4d",
                );
            }
        }
        if provider == Provider::Ec2 && g.min_size.is_none() && g.max_size.is_none() && g.desired_size.is_none() {
            c.err(
                &path,
                "the instance group has no size",
                "set desiredSize (and minSize/maxSize for autoscaling)",
            );
        }
        let (min, max, desired) = match (g.min_size, g.max_size, g.desired_size) {
            (None, None, None) => (2, 2, 2),
            (min, max, Some(d)) => (min.unwrap_or(d), max.unwrap_or(d.max(min.unwrap_or(d))), d),
            (min, max, None) => {
                let min = min.unwrap_or(0);
                (min, max.unwrap_or(min.max(1)), min)
            }
        };
        if min > max {
            c.err(
                format!("{path}.minSize"),
                format!("minSize {min} is above maxSize {max}"),
                "make minSize <= maxSize",
            );
        } else if desired < min || desired > max {
            c.err(
                format!("{path}.desiredSize"),
                format!("desiredSize {desired} is outside {min}..{max}"),
                "make minSize <= desiredSize <= maxSize",
            );
        }
        if max == 0 {
            c.err(
                format!("{path}.maxSize"),
                "maxSize is 0",
                "a group needs room for at least one node",
            );
        }
        for (field, n) in [("minSize", min), ("maxSize", max), ("desiredSize", desired)] {
            if n > MAX_GROUP_SIZE {
                c.err(
                    format!("{path}.{field}"),
                    format!("{n} nodes is more than a group can hold"),
                    format!(
                        "use at most {MAX_GROUP_SIZE} (AWS quotas keep groups far smaller: EKS allows 450 nodes per \
                         managed nodegroup); split the nodes into several groups"
                    ),
                );
            }
        }
        let mut labels = BTreeMap::new();
        for (k, v) in g.labels.clone().unwrap_or_default() {
            if !is_label_key(&k) || v.len() > 63 {
                c.err(
                    format!("{path}.labels.{k}"),
                    format!("`{k}: {v}` is not a valid Kubernetes label"),
                    "keys are [prefix/]name with name up to 63 characters; values up to 63",
                );
            }
            labels.insert(k, v);
        }
        let mut taints = Vec::new();
        for (j, t) in g.taints.iter().flatten().enumerate() {
            if !is_label_key(&t.key) {
                c.err(
                    format!("{path}.taints[{j}].key"),
                    format!("`{}` is not a valid taint key", t.key),
                    "taint keys follow label key rules",
                );
            }
            taints.push(Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect,
            });
        }
        let v = g.volume.clone().unwrap_or(VolumeSpec {
            size: None,
            kind: None,
            encrypted: None,
            iops: None,
            throughput: None,
        });
        let volume = Volume {
            size_gib: v.size.unwrap_or(80),
            kind: v.kind.unwrap_or_else(|| "gp3".into()),
            encrypted: v.encrypted.unwrap_or(true),
            iops: v.iops,
            throughput: v.throughput,
        };
        if !(8..=16384).contains(&volume.size_gib) {
            c.err(
                format!("{path}.volume.size"),
                format!("{} GiB is out of range", volume.size_gib),
                "use 8 to 16384 GiB",
            );
        }
        if !VOLUME_TYPES.contains(&volume.kind.as_str()) {
            c.err(
                format!("{path}.volume.type"),
                format!("`{}` is not supported", volume.kind),
                format!("use one of {}", VOLUME_TYPES.join(", ")),
            );
        }
        if volume.iops.is_some() && volume.kind == "gp2" {
            c.err(
                format!("{path}.volume.iops"),
                "gp2 volumes have no provisioned IOPS",
                "use gp3, io1 or io2, or remove iops",
            );
        }
        if volume.throughput.is_some() && volume.kind != "gp3" {
            c.err(
                format!("{path}.volume.throughput"),
                "only gp3 volumes take a throughput",
                "use gp3 or remove throughput",
            );
        }
        // EBS's documented ranges per volume type.
        let iops_range = match volume.kind.as_str() {
            "gp3" => Some((3000, 16000)),
            "io1" => Some((100, 64000)),
            "io2" => Some((100, 256000)),
            _ => None,
        };
        match (iops_range, volume.iops) {
            (Some((lo, hi)), Some(iops)) if !(lo..=hi).contains(&iops) => c.err(
                format!("{path}.volume.iops"),
                format!("{iops} IOPS is out of range for {}", volume.kind),
                format!("use {lo} to {hi}"),
            ),
            (Some(_), None) if volume.kind.starts_with("io") => c.err(
                format!("{path}.volume.iops"),
                format!("{} volumes need provisioned IOPS", volume.kind),
                "set iops (100 to 64000 for io1, 100 to 256000 for io2)",
            ),
            _ => {}
        }
        if let Some(t) = volume.throughput
            && volume.kind == "gp3"
            && !(125..=1000).contains(&t)
        {
            c.err(
                format!("{path}.volume.throughput"),
                format!("{t} MiB/s is out of range for gp3"),
                "use 125 to 1000",
            );
        }
        let subnets = g.subnets.unwrap_or(match topology {
            Topology::Private => SubnetType::Private,
            Topology::Public => SubnetType::Public,
        });
        if topology == Topology::Public && subnets == SubnetType::Private {
            c.err(
                format!("{path}.subnets"),
                "the public topology has no private subnets",
                "use subnets: public or topology: private",
            );
        }
        out.push(NodeGroup {
            name: g.name.clone(),
            instance_types,
            min_size: min,
            max_size: max,
            desired_size: desired,
            spot,
            gpu,
            labels,
            taints,
            volume,
            subnets,
        });
    }
    out
}
