//! The network (`spec.network`): VPC, zones, topology, NAT gateways and the computed subnets; types and validation.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub vpc: VpcSource,
    pub zones: Vec<String>,
    pub topology: Topology,
    pub nat_gateways: NatGateways,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VpcSource {
    Create { cidr: Ipv4Net },
    Existing { id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub zone: String,
    pub kind: SubnetType,
    pub source: SubnetSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubnetSource {
    Create { cidr: Ipv4Net },
    Existing { id: String },
}

impl Subnet {
    /// Logical name, unique in the cluster: `public-us-east-1a`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.kind, self.zone)
    }
}

pub(super) fn network(c: &mut Checker, spec: Option<&NetworkSpec>, region: &str, provider: Provider) -> Network {
    let empty = NetworkSpec {
        vpc_cidr: None,
        vpc_id: None,
        zones: None,
        topology: None,
        nat_gateways: None,
        subnets: None,
    };
    let spec = spec.unwrap_or(&empty);
    let topology = spec.topology.unwrap_or(Topology::Private);
    let nat_gateways = spec.nat_gateways.unwrap_or(match topology {
        Topology::Private => NatGateways::Single,
        Topology::Public => NatGateways::None,
    });
    if topology == Topology::Public && nat_gateways != NatGateways::None {
        c.err(
            "spec.network.natGateways",
            "NAT gateways serve private subnets, and the public topology has none",
            "set natGateways: none, or topology: private",
        );
    }

    let vpc = match (&spec.vpc_cidr, &spec.vpc_id) {
        (Some(_), Some(_)) => {
            c.err(
                "spec.network.vpcId",
                "vpcId and vpcCidr exclude each other",
                "give vpcCidr to create a VPC, or vpcId to use one",
            );
            VpcSource::Existing { id: String::new() }
        }
        (None, Some(id)) => {
            if !(id.starts_with("vpc-") && id.len() > 4 && id[4..].chars().all(|c| c.is_ascii_hexdigit())) {
                c.err(
                    "spec.network.vpcId",
                    format!("`{id}` is not a VPC id"),
                    "VPC ids look like vpc-0123456789abcdef0",
                );
            }
            VpcSource::Existing { id: id.clone() }
        }
        (cidr, None) => {
            let text = cidr.as_deref().unwrap_or(DEFAULT_VPC_CIDR);
            let cidr = c
                .cidr("spec.network.vpcCidr", text)
                .unwrap_or_else(|| DEFAULT_VPC_CIDR.parse().unwrap());
            if !(16..=24).contains(&cidr.prefix_len()) {
                c.err(
                    "spec.network.vpcCidr",
                    format!("a /{} VPC is outside what kforge supports", cidr.prefix_len()),
                    "use a prefix between /16 and /24",
                );
            }
            VpcSource::Create { cidr }
        }
    };
    let existing = matches!(vpc, VpcSource::Existing { .. });

    let zones: Vec<String> = match (&spec.zones, &spec.subnets, existing) {
        (Some(z), _, _) => z.clone(),
        // With an existing VPC the zones are those of the listed subnets.
        (None, Some(subnets), true) => {
            let mut zones: Vec<String> = Vec::new();
            for s in subnets {
                if !zones.contains(&s.zone) {
                    zones.push(s.zone.clone());
                }
            }
            zones
        }
        _ => ["a", "b", "c"].iter().map(|l| format!("{region}{l}")).collect(),
    };
    let mut seen = BTreeSet::new();
    for (i, z) in zones.iter().enumerate() {
        if !region.is_empty() && !zone_in_region(z, region) {
            c.err(
                format!("spec.network.zones[{i}]"),
                format!("zone `{z}` is not in region {region}"),
                format!("use zones of {region}, such as {region}a"),
            );
        }
        if !seen.insert(z) {
            c.err(
                format!("spec.network.zones[{i}]"),
                format!("zone `{z}` is listed twice"),
                "list each zone once",
            );
        }
    }
    if zones.is_empty() {
        c.err("spec.network.zones", "no zones", "list at least one availability zone");
    }
    if provider == Provider::Eks && zones.len() < 2 {
        c.err(
            "spec.network.zones",
            format!("EKS needs subnets in at least 2 zones, the spec has {}", zones.len()),
            "list two or more zones",
        );
    }

    let wanted_kinds: &[SubnetType] = match topology {
        Topology::Private => &[SubnetType::Private, SubnetType::Public],
        Topology::Public => &[SubnetType::Public],
    };

    let subnets = match &spec.subnets {
        None if existing => {
            c.err(
                "spec.network.subnets",
                "an existing VPC needs its subnets listed",
                "list the subnets to use with zone, type and id",
            );
            Vec::new()
        }
        None => match &vpc {
            VpcSource::Create { cidr } => compute_subnets(c, *cidr, &zones, wanted_kinds),
            VpcSource::Existing { .. } => Vec::new(),
        },
        Some(list) => {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let path = format!("spec.network.subnets[{i}]");
                if !zones.contains(&s.zone) {
                    c.err(
                        format!("{path}.zone"),
                        format!("zone `{}` is not in spec.network.zones", s.zone),
                        "add the zone to spec.network.zones or fix the subnet's zone",
                    );
                }
                if !wanted_kinds.contains(&s.kind) {
                    c.err(
                        format!("{path}.type"),
                        "the public topology has no private subnets",
                        "set topology: private, or remove the private subnets",
                    );
                }
                let source = match (&vpc, &s.cidr, &s.id) {
                    (VpcSource::Create { cidr: vpc_cidr }, Some(text), None) => {
                        let cidr = c.cidr(&format!("{path}.cidr"), text);
                        if let Some(cidr) = cidr
                            && !vpc_cidr.contains(&cidr)
                        {
                            c.err(
                                format!("{path}.cidr"),
                                format!("{cidr} is outside the VPC {vpc_cidr}"),
                                "choose a block inside spec.network.vpcCidr, or omit subnets to have them computed",
                            );
                        }
                        cidr.map(|cidr| SubnetSource::Create { cidr })
                    }
                    (VpcSource::Create { .. }, _, _) => {
                        c.err(
                            &path,
                            "a subnet of a VPC kforge creates needs a cidr and no id",
                            "give cidr, or omit subnets to have them computed",
                        );
                        None
                    }
                    (VpcSource::Existing { .. }, None, Some(id)) => {
                        if !id.starts_with("subnet-") {
                            c.err(
                                format!("{path}.id"),
                                format!("`{id}` is not a subnet id"),
                                "subnet ids look like subnet-0123456789abcdef0",
                            );
                        }
                        Some(SubnetSource::Existing { id: id.clone() })
                    }
                    (VpcSource::Existing { .. }, _, _) => {
                        c.err(
                            &path,
                            "a subnet of an existing VPC needs an id and no cidr",
                            "give the existing subnet's id",
                        );
                        None
                    }
                };
                if let Some(source) = source {
                    out.push(Subnet {
                        zone: s.zone.clone(),
                        kind: s.kind,
                        source,
                    });
                }
            }
            for (i, a) in out.iter().enumerate() {
                for b in &out[..i] {
                    if a.zone == b.zone && a.kind == b.kind {
                        c.err(
                            format!("spec.network.subnets[{i}]"),
                            format!("a second {} subnet in {}", a.kind, a.zone),
                            "kforge uses one subnet per zone and type",
                        );
                    }
                    if let (SubnetSource::Create { cidr: x }, SubnetSource::Create { cidr: y }) = (&a.source, &b.source)
                        && overlaps(x, y)
                    {
                        c.err(
                            format!("spec.network.subnets[{i}].cidr"),
                            format!("{x} overlaps {y} of the {} subnet", b.name()),
                            "give every subnet its own block",
                        );
                    }
                }
            }
            for z in &zones {
                for kind in wanted_kinds {
                    if !out.iter().any(|s| &s.zone == z && s.kind == *kind) && !existing {
                        c.err(
                            "spec.network.subnets",
                            format!("zone {z} has no {kind} subnet"),
                            format!("add a {kind} subnet in {z}, or omit subnets to have them computed"),
                        );
                    }
                }
            }
            out
        }
    };

    if nat_gateways == NatGateways::PerZone || nat_gateways == NatGateways::Single {
        for z in &zones {
            let has_public = subnets.iter().any(|s| &s.zone == z && s.kind == SubnetType::Public);
            if nat_gateways == NatGateways::PerZone && !has_public && !existing {
                c.err(
                    "spec.network.natGateways",
                    format!("zone {z} has no public subnet for its NAT gateway"),
                    "add a public subnet there",
                );
            }
        }
        if existing {
            c.err(
                "spec.network.natGateways",
                "kforge does not add NAT gateways to an existing VPC",
                "set natGateways: none; the existing VPC's routing is used as is",
            );
        }
    }

    Network {
        vpc,
        zones,
        topology,
        nat_gateways,
        subnets,
    }
}

/// Splits the VPC into equal blocks: private subnets first (zone order), then public ones.
pub(super) fn compute_subnets(c: &mut Checker, vpc: Ipv4Net, zones: &[String], kinds: &[SubnetType]) -> Vec<Subnet> {
    let count = zones.len() * kinds.len();
    let extra_bits = (count.max(1) as f64).log2().ceil() as u8;
    let prefix = vpc.prefix_len() + extra_bits.max(1);
    if prefix > 28 {
        c.err(
            "spec.network.vpcCidr",
            format!("{vpc} is too small for {count} subnets"),
            "use a larger VPC block or fewer zones",
        );
        return Vec::new();
    }
    let mut blocks = vpc.subnets(prefix).expect("prefix checked");
    let mut out = Vec::new();
    for kind in kinds {
        for zone in zones {
            let cidr = blocks.next().expect("enough blocks by construction");
            out.push(Subnet {
                zone: zone.clone(),
                kind: *kind,
                source: SubnetSource::Create { cidr },
            });
        }
    }
    out
}
