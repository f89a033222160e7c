//! The addons (`spec.addons`): which a provider can apply, their versions; types and validation.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    pub name: String,
    pub version: Option<String>,
}

pub(super) fn addons(c: &mut Checker, spec: Option<&[AddonSpec]>, provider: Provider) -> Vec<Addon> {
    let known: Vec<&str> = match provider {
        Provider::Eks => EKS_ADDONS.to_vec(),
        Provider::Ec2 => SELF_BUILT_ADDONS.to_vec(),
        Provider::Hosts => SELF_BUILT_ADDONS
            .iter()
            .copied()
            .filter(|a| !EC2_ONLY_ADDONS.contains(a))
            .collect(),
    };
    let Some(spec) = spec else {
        let defaults: &[&str] = match provider {
            Provider::Eks => &["vpc-cni", "coredns", "kube-proxy"],
            Provider::Ec2 => &["flannel", "coredns", "aws-ebs-csi-driver"],
            Provider::Hosts => &["flannel", "coredns"],
        };
        return defaults
            .iter()
            .map(|n| Addon {
                name: n.to_string(),
                version: None,
            })
            .collect();
    };
    for (i, a) in spec.iter().enumerate() {
        let path = format!("spec.addons[{i}].name");
        if known.contains(&a.name.as_str()) {
            continue;
        }
        // The addons kforge cannot apply, each refused with why (the generic refusal follows for the rest).
        let why = match (provider, a.name.as_str()) {
            (Provider::Hosts, n) if EC2_ONLY_ADDONS.contains(&n) => Some((
                format!("`{n}` needs AWS, and provider hosts has no cloud"),
                "remove it; bring your own storage provisioner for existing machines".to_string(),
            )),
            (Provider::Ec2, CLOUD_CONTROLLER) => Some((
                "the AWS cloud controller manager comes with every provider ec2 cluster".to_string(),
                "remove it from spec.addons".to_string(),
            )),
            (p, "calico") if p != Provider::Eks => Some((
                "`calico` is not an addon kforge installs: the bootstrap's pod network is flannel".to_string(),
                "use flannel, or leave flannel out of spec.addons and install calico through the API after create"
                    .to_string(),
            )),
            _ => None,
        };
        if let Some((message, hint)) = why {
            c.err(path, message, hint);
        }
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in spec.iter().enumerate() {
        let refused_above = c.errors.iter().any(|e| e.path == format!("spec.addons[{i}].name"));
        if !known.contains(&a.name.as_str()) && !refused_above {
            let bring_your_own = if provider == Provider::Eks {
                String::new()
            } else {
                "; install other addons through the API after create (`addons: []` leaves the pod network and DNS to you)"
                    .to_string()
            };
            c.err(
                format!("spec.addons[{i}].name"),
                format!("`{}` is not an addon kforge installs with provider {provider}", a.name),
                format!("use one of {}{bring_your_own}", known.join(", ")),
            );
        }
        if provider != Provider::Eks && a.version.is_some() {
            c.err(
                format!("spec.addons[{i}].version"),
                format!(
                    "the version of self-built addon `{}` comes from the asset manifest of the Kubernetes version",
                    a.name
                ),
                "remove the version (`kforge get assets --version V` lists the addons' images)",
            );
        }
        if !names.insert(&a.name) {
            c.err(
                format!("spec.addons[{i}].name"),
                format!("addon `{}` is listed twice", a.name),
                "list each addon once",
            );
        }
        out.push(Addon {
            name: a.name.clone(),
            version: a.version.clone(),
        });
    }
    out
}
