//! The EKS settings (`spec.eks`, Fargate profiles) and existing IAM roles (`spec.iam`): their model types and
//! validation.

use super::*;

/// EKS control-plane settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Eks {
    pub endpoint_public: bool,
    pub endpoint_private: bool,
    pub public_access_cidrs: Vec<Ipv4Net>,
    /// Enabled log types, in [`EKS_LOG_TYPES`] order.
    pub logging: Vec<String>,
    pub secrets_encryption_key_arn: Option<String>,
    pub with_oidc: bool,
    pub fargate_profiles: Vec<FargateProfile>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FargateProfile {
    pub name: String,
    pub selectors: Vec<FargateSelector>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FargateSelector {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Existing IAM roles to use instead of creating them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Iam {
    pub cluster_role_arn: Option<String>,
    pub node_role_arn: Option<String>,
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`
pub(super) fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty() && !n.ends_with('/'))
}

pub(super) fn iam(c: &mut Checker, spec: Option<&IamSpec>, provider: Provider) -> Iam {
    let Some(spec) = spec else {
        return Iam::default();
    };
    if provider != Provider::Eks {
        c.err(
            "spec.iam",
            format!("provider {provider} does not take IAM roles yet"),
            "remove spec.iam",
        );
    }
    for (field, arn) in [
        ("clusterRoleArn", &spec.cluster_role_arn),
        ("nodeRoleArn", &spec.node_role_arn),
    ] {
        if let Some(arn) = arn
            && !is_role_arn(arn)
        {
            c.err(
                format!("spec.iam.{field}"),
                format!("`{arn}` is not an IAM role ARN"),
                "role ARNs look like arn:aws:iam::123456789012:role/my-role",
            );
        }
    }
    Iam {
        cluster_role_arn: spec.cluster_role_arn.clone(),
        node_role_arn: spec.node_role_arn.clone(),
    }
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` or `...:alias/NAME`.
pub(super) fn is_kms_key_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "kms"
        && is_region(parts[3])
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && (parts[5].strip_prefix("key/").is_some_and(|k| !k.is_empty())
            || parts[5].strip_prefix("alias/").is_some_and(|k| !k.is_empty()))
}

pub(super) fn eks(
    c: &mut Checker,
    spec: Option<&EksSpec>,
    provider: Provider,
    network: Option<&Network>,
) -> Option<Eks> {
    if provider != Provider::Eks {
        if spec.is_some() {
            c.err(
                "spec.eks",
                format!("not used with provider {provider}"),
                "remove spec.eks (it configures EKS managed control planes)",
            );
        }
        return None;
    }
    let empty = EksSpec {
        endpoint: None,
        logging: None,
        secrets_encryption_key_arn: None,
        with_oidc: None,
        fargate_profiles: None,
    };
    let spec = spec.unwrap_or(&empty);
    let endpoint = spec.endpoint.as_ref();
    let endpoint_public = endpoint.and_then(|e| e.public_access).unwrap_or(true);
    let endpoint_private = endpoint.and_then(|e| e.private_access).unwrap_or(true);
    if !endpoint_public && !endpoint_private {
        c.err(
            "spec.eks.endpoint",
            "with neither public nor private access nobody can reach the API server",
            "set privateAccess: true (reachable from the VPC) or publicAccess: true",
        );
    }
    let mut public_access_cidrs = Vec::new();
    match endpoint.and_then(|e| e.public_access_cidrs.as_ref()) {
        Some(_) if !endpoint_public => c.err(
            "spec.eks.endpoint.publicAccessCidrs",
            "the public endpoint is off, so these CIDRs would have no effect",
            "remove publicAccessCidrs or set publicAccess: true",
        ),
        Some(cidrs) if cidrs.is_empty() => c.err(
            "spec.eks.endpoint.publicAccessCidrs",
            "empty list",
            "list the CIDRs allowed to reach the API, or set publicAccess: false",
        ),
        Some(cidrs) => {
            for (i, text) in cidrs.iter().enumerate() {
                if let Some(net) = c.cidr(&format!("spec.eks.endpoint.publicAccessCidrs[{i}]"), text) {
                    public_access_cidrs.push(net);
                }
            }
        }
        None if endpoint_public => public_access_cidrs.push("0.0.0.0/0".parse().expect("valid CIDR")),
        None => {}
    }
    let mut logging = Vec::new();
    for (i, t) in spec.logging.iter().flatten().enumerate() {
        if !EKS_LOG_TYPES.contains(&t.as_str()) {
            c.err(
                format!("spec.eks.logging[{i}]"),
                format!("`{t}` is not an EKS control-plane log type"),
                format!("use some of {}", EKS_LOG_TYPES.join(", ")),
            );
        }
    }
    for t in EKS_LOG_TYPES {
        if spec.logging.iter().flatten().any(|l| l == t) {
            logging.push(t.to_string());
        }
    }
    if let Some(arn) = &spec.secrets_encryption_key_arn
        && !is_kms_key_arn(arn)
    {
        c.err(
            "spec.eks.secretsEncryptionKeyArn",
            format!("`{arn}` is not a KMS key ARN"),
            "KMS key ARNs look like arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        );
    }
    let mut fargate_profiles = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in spec.fargate_profiles.iter().flatten().enumerate() {
        let path = format!("spec.eks.fargateProfiles[{i}]");
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 63
            && p.name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            c.err(
                format!("{path}.name"),
                format!("`{}` is not a valid Fargate profile name", p.name),
                "use 1-63 letters, digits, '-' and '_', starting with a letter or digit",
            );
        }
        if !names.insert(p.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("Fargate profile `{}` is defined twice", p.name),
                "give each profile its own name",
            );
        }
        if p.selectors.is_empty() || p.selectors.len() > 5 {
            c.err(
                format!("{path}.selectors"),
                format!("{} selectors; EKS takes 1 to 5", p.selectors.len()),
                "list the namespaces (and labels) whose pods run on Fargate",
            );
        }
        for (j, s) in p.selectors.iter().enumerate() {
            if !is_dns_label(&s.namespace, 63) {
                c.err(
                    format!("{path}.selectors[{j}].namespace"),
                    format!("`{}` is not a namespace name", s.namespace),
                    "namespaces are lowercase DNS labels such as kube-system",
                );
            }
            for k in s.labels.iter().flatten().map(|(k, _)| k) {
                if !is_label_key(k) {
                    c.err(
                        format!("{path}.selectors[{j}].labels.{k}"),
                        format!("`{k}` is not a Kubernetes label key"),
                        "label keys look like app or example.com/tier",
                    );
                }
            }
        }
        fargate_profiles.push(FargateProfile {
            name: p.name.clone(),
            selectors: p
                .selectors
                .iter()
                .map(|s| FargateSelector {
                    namespace: s.namespace.clone(),
                    labels: s.labels.clone().unwrap_or_default(),
                })
                .collect(),
        });
    }
    if !fargate_profiles.is_empty()
        && let Some(net) = network
        && !net.subnets.iter().any(|s| s.kind == SubnetType::Private)
    {
        c.err(
            "spec.eks.fargateProfiles",
            "Fargate runs pods only in private subnets, and the network has none",
            "use spec.network.topology: private (or list private subnets)",
        );
    }
    Some(Eks {
        endpoint_public,
        endpoint_private,
        public_access_cidrs,
        logging,
        secrets_encryption_key_arn: spec.secrets_encryption_key_arn.clone(),
        with_oidc: spec.with_oidc.unwrap_or(false),
        fargate_profiles,
    })
}
