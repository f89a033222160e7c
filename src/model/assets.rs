//! Where a self-built cluster's files come from (`spec.assets`), the kubelet's settings and the machine image: their
//! model types and validation.

use super::*;

/// `spec.kubelet` with its defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kubelet {
    /// The kubelet refuses cgroup v1 hosts (1.35's default).
    pub fail_cgroup_v1: bool,
    /// Whether the spec said so (a round trip writes back only what the spec set).
    pub fail_cgroup_v1_set: bool,
    /// The spec's hard eviction thresholds by signal (validated), as it wrote them.
    pub eviction_hard: BTreeMap<String, String>,
    /// The spec's image garbage collection thresholds (percent of the image filesystem in use).
    pub image_gc_high_threshold_percent: Option<u32>,
    pub image_gc_low_threshold_percent: Option<u32>,
}

/// The kubelet's hard eviction thresholds when its configuration names none. A configuration that names some
/// replaces all of them, so kforge renders these beside the spec's (see [`Kubelet::eviction_hard_rendered`]).
pub const KUBELET_EVICTION_HARD_DEFAULTS: [(&str, &str); 5] = [
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// The kubelet's image garbage collection thresholds when its configuration names none.
pub const KUBELET_IMAGE_GC_DEFAULTS: (u32, u32) = (85, 80);

/// The signals a kubelet's `evictionHard` accepts.
const EVICTION_SIGNALS: [&str; 8] = [
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

impl Kubelet {
    /// The `evictionHard` to render: none when the spec sets none (the kubelet's defaults hold), else the
    /// kubelet's defaults overlaid with the spec's thresholds.
    pub fn eviction_hard_rendered(&self) -> BTreeMap<String, String> {
        if self.eviction_hard.is_empty() {
            return BTreeMap::new();
        }
        let mut out: BTreeMap<String, String> = KUBELET_EVICTION_HARD_DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.extend(self.eviction_hard.clone());
        out
    }

    /// The image garbage collection thresholds (high, low) to render: none when the spec sets neither.
    pub fn image_gc_rendered(&self) -> Option<(u32, u32)> {
        (self.image_gc_high_threshold_percent.is_some() || self.image_gc_low_threshold_percent.is_some()).then(|| {
            (
                self.image_gc_high_threshold_percent
                    .unwrap_or(KUBELET_IMAGE_GC_DEFAULTS.0),
                self.image_gc_low_threshold_percent
                    .unwrap_or(KUBELET_IMAGE_GC_DEFAULTS.1),
            )
        })
    }
}

/// Whether `v` is what a kubelet reads as an eviction threshold: a percentage below 100% (the kubelet ignores
/// `100%` as it does `0%`, which turns a signal off), or a non-negative quantity (`500Mi`, `1.5Gi`, `20000`).
fn is_eviction_threshold(v: &str) -> bool {
    let number = |n: &str| {
        let (int, frac) = n.split_once('.').unwrap_or((n, "0"));
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(p) = v.strip_suffix('%') {
        return number(p) && p.parse::<f64>().is_ok_and(|p| p < 100.0);
    }
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    number(digits) && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"].contains(&suffix)
}

/// Where a self-built cluster's hosts get their files (see `crate::assets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assets {
    pub mirror: Option<String>,
    pub files: BTreeMap<String, AssetOverride>,
    /// The registry addon and sandbox images are pulled from instead of their upstream ones.
    pub image_registry: Option<String>,
}

/// The machine image of provider ec2's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineImage {
    /// Amazon Linux 2023, the newest AMI from AWS' public SSM parameter.
    Al2023,
    /// Ubuntu 24.04 LTS, the newest AMI from Canonical's public SSM parameter.
    Ubuntu,
    /// An AMI id given as is.
    Id(String),
}

impl MachineImage {
    /// How the spec writes it.
    pub fn as_spec(&self) -> String {
        match self {
            MachineImage::Al2023 => "al2023".into(),
            MachineImage::Ubuntu => "ubuntu".into(),
            MachineImage::Id(id) => id.clone(),
        }
    }

    /// The login user the image's cloud-init creates.
    pub fn default_user(&self) -> &'static str {
        match self {
            MachineImage::Ubuntu => "ubuntu",
            MachineImage::Al2023 | MachineImage::Id(_) => "ec2-user",
        }
    }
}

/// `spec.assets`: a mirror URL and per-asset sources, checked against the manifest of the cluster's version.
pub(super) fn assets(c: &mut Checker, spec: Option<&spec::AssetsSpec>, provider: Provider, version: &str) -> Assets {
    let Some(spec) = spec else {
        return Assets::default();
    };
    if provider == Provider::Eks {
        c.err(
            "spec.assets",
            "provider eks installs nothing on hosts (EKS brings its own binaries)",
            "remove spec.assets",
        );
        return Assets::default();
    }
    let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    if let Some(m) = &spec.mirror
        && !http(m)
    {
        c.err(
            "spec.assets.mirror",
            format!("`{m}` is not an http(s) URL"),
            "give the mirror's base URL, e.g. https://mirror.internal/kforge",
        );
    }
    let known: Option<Vec<String>> = crate::assets::manifest(version)
        .ok()
        .map(|m| m.assets.into_iter().map(|a| a.name).collect());
    let mut files = BTreeMap::new();
    for (name, f) in spec.files.iter().flatten() {
        let path = format!("spec.assets.files.{name}");
        if let Some(known) = &known
            && !known.contains(name)
        {
            c.err(
                &path,
                format!("`{name}` is not an asset of Kubernetes {version}"),
                format!("use one of {}", known.join(", ")),
            );
        }
        let mut digest = None;
        for (algo, value, len) in [("sha256", &f.sha256, 64), ("sha512", &f.sha512, 128)] {
            if let Some(v) = value {
                if v.len() != len || !v.chars().all(|ch| ch.is_ascii_hexdigit()) {
                    c.err(
                        format!("{path}.{algo}"),
                        format!("not a {algo} ({len} hex digits)"),
                        "copy the digest the file's publisher lists",
                    );
                }
                digest = Some(format!("{algo}:{}", v.to_ascii_lowercase()));
            }
        }
        if f.sha256.is_some() && f.sha512.is_some() {
            c.err(&path, "both sha256 and sha512 given", "give one digest");
        }
        if let Some(v) = &f.version {
            let digits = v.strip_prefix('v').unwrap_or(v);
            if digits.is_empty()
                || !digits
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ".-+".contains(ch))
            {
                c.err(
                    format!("{path}.version"),
                    format!("`{v}` is not a version"),
                    "give the release's version, e.g. v1.7.28",
                );
            }
            if digest.is_none() {
                c.err(
                    &path,
                    format!("version {v} without a digest"),
                    "add sha256 (or sha512) of that version's file: the manifest pins only its own version",
                );
            }
        }
        if let Some(u) = &f.url {
            if !http(u) {
                c.err(
                    format!("{path}.url"),
                    format!("`{u}` is not an http(s) URL"),
                    "give the file's download URL",
                );
            }
            if digest.is_none() {
                c.err(
                    &path,
                    "a URL without a digest",
                    "add sha256 (or sha512) of the file: kforge installs nothing it cannot verify",
                );
            }
        }
        files.insert(
            name.clone(),
            AssetOverride {
                version: f.version.clone(),
                url: f.url.clone(),
                digest,
            },
        );
    }
    if let Some(r) = &spec.image_registry
        && (r.is_empty() || r.contains("://") || r.chars().any(char::is_whitespace) || r.ends_with('/'))
    {
        c.err(
            "spec.assets.imageRegistry",
            format!("`{r}` is not a registry"),
            "give the registry host and optional path, without a scheme, e.g. mirror.internal:5000/k8s",
        );
    }
    Assets {
        mirror: spec.mirror.as_ref().map(|m| m.trim_end_matches('/').to_string()),
        files,
        image_registry: spec.image_registry.clone(),
    }
}

/// `spec.kubelet`: self-built only; cgroup v1 cannot be allowed where Kubernetes requires v2 (1.35 on).
pub(super) fn kubelet(c: &mut Checker, spec: Option<&spec::KubeletSpec>, provider: Provider, version: &str) -> Kubelet {
    let v2_required = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 35);
    let mut out = Kubelet {
        fail_cgroup_v1: v2_required,
        ..Kubelet::default()
    };
    let Some(spec) = spec else { return out };
    if provider == Provider::Eks {
        c.err(
            "spec.kubelet",
            "provider eks configures its nodes' kubelets itself",
            "remove spec.kubelet",
        );
        return out;
    }
    if let Some(fail) = spec.fail_cgroup_v1 {
        if v2_required && !fail {
            c.err(
                "spec.kubelet.failCgroupV1",
                format!("Kubernetes {version} requires cgroup v2: a kubelet that runs on cgroup v1 is not supported"),
                "remove the setting and run the hosts on cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use \
                 Kubernetes 1.34",
            );
        }
        out.fail_cgroup_v1 = fail || v2_required;
        out.fail_cgroup_v1_set = true;
    }
    for (signal, threshold) in spec.eviction_hard.iter().flatten() {
        let path = format!("spec.kubelet.evictionHard.{signal}");
        if !EVICTION_SIGNALS.contains(&signal.as_str()) {
            c.err(
                path,
                format!("{signal:?} is not an eviction signal the kubelet knows"),
                format!("use one of {}", EVICTION_SIGNALS.join(", ")),
            );
        } else if !is_eviction_threshold(threshold) {
            c.err(
                path,
                format!("{threshold:?} is neither a percentage below 100% nor a quantity"),
                "write a percentage such as '10%' or a quantity such as 500Mi (the kubelet ignores '100%'; '0%' \
                 turns the signal off)",
            );
        }
    }
    out.eviction_hard = spec.eviction_hard.clone().unwrap_or_default();
    let (high, low) = (
        spec.image_gc_high_threshold_percent,
        spec.image_gc_low_threshold_percent,
    );
    for (field, value) in [
        ("imageGCHighThresholdPercent", high),
        ("imageGCLowThresholdPercent", low),
    ] {
        if value.is_some_and(|v| v > 100) {
            c.err(
                format!("spec.kubelet.{field}"),
                format!("{} is not a percentage", value.unwrap_or_default()),
                "give a whole number from 0 to 100",
            );
        }
    }
    let (effective_high, effective_low) = (
        high.unwrap_or(KUBELET_IMAGE_GC_DEFAULTS.0),
        low.unwrap_or(KUBELET_IMAGE_GC_DEFAULTS.1),
    );
    if (high.is_some() || low.is_some()) && effective_low >= effective_high && effective_high <= 100 {
        c.err(
            if low.is_some() {
                "spec.kubelet.imageGCLowThresholdPercent"
            } else {
                "spec.kubelet.imageGCHighThresholdPercent"
            },
            format!(
                "image garbage collection would free down to {effective_low}% once usage passes {effective_high}%: \
                 the low threshold must be below the high one (the kubelet refuses to start otherwise)"
            ),
            "set both imageGCHighThresholdPercent and imageGCLowThresholdPercent, low below high",
        );
    }
    out.image_gc_high_threshold_percent = high;
    out.image_gc_low_threshold_percent = low;
    out
}

pub(super) fn image(c: &mut Checker, spec: Option<&str>, provider: Provider) -> Option<MachineImage> {
    if provider != Provider::Ec2 {
        if spec.is_some() {
            c.err(
                "spec.image",
                format!("provider {provider} does not choose machine images"),
                "remove spec.image",
            );
        }
        return None;
    }
    Some(match spec.unwrap_or("al2023") {
        "al2023" => MachineImage::Al2023,
        "ubuntu" => MachineImage::Ubuntu,
        id if id.starts_with("ami-") && id.len() > 4 && id[4..].chars().all(|ch| ch.is_ascii_hexdigit()) => {
            MachineImage::Id(id.to_string())
        }
        other => {
            c.err(
                "spec.image",
                format!("`{other}` is not a machine image kforge knows"),
                "use al2023, ubuntu, or an AMI id such as ami-0123456789abcdef0",
            );
            return None;
        }
    })
}
