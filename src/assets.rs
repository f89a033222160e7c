//! The files a self-built cluster installs (etcd, containerd, runc, CNI plugins, the Kubernetes binaries): one
//! manifest per Kubernetes version (`templates/assets/`), with upstream URLs and the digests their publishers list.
//! Every host downloads its files itself (from upstream or `spec.assets.mirror`) and checks the digest before
//! anything is unpacked; installs go through temporary names, so a failed download leaves nothing half-written.
//! A leaf: the spec's validation asks it which versions and files exist, the bootstrap runs the install scripts
//! it resolves; it reaches no host itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::HostRole;

/// Another source for one asset: version, URL (with `{arch}`, `{version}`) and/or digest (`sha256:HEX` /
/// `sha512:HEX`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetOverride {
    pub version: Option<String>,
    pub url: Option<String>,
    pub digest: Option<String>,
}

/// Built-in manifests by Kubernetes minor version.
const MANIFESTS: &[(&str, &str)] = &[
    ("1.33", include_str!("../templates/assets/1.33.yaml")),
    ("1.34", include_str!("../templates/assets/1.34.yaml")),
    ("1.35", include_str!("../templates/assets/1.35.yaml")),
];

/// When in the bootstrap an asset is installed: the etcd cluster first, then the container runtime, then the
/// Kubernetes binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    Etcd,
    Runtime,
    Kubernetes,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Asset {
    pub name: String,
    pub version: String,
    pub stage: Stage,
    pub roles: Vec<HostRole>,
    /// Upstream URL; `{arch}` is the host's architecture, `{version}` the version without its leading `v`.
    pub url: String,
    /// `sha256:HEX` or `sha512:HEX` by architecture.
    pub digest: BTreeMap<String, String>,
    /// Archive member (`{arch}`, `{version}` as in the URL) → installed path.
    #[serde(default)]
    pub extract: BTreeMap<String, String>,
    /// Every file of the archive into this directory.
    #[serde(default)]
    pub extract_all: Option<String>,
    /// The download is the program itself, installed at this path.
    #[serde(default)]
    pub binary: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub kubernetes_version: String,
    pub release: String,
    /// Container images by name: the sandbox (`pause`) and the addons' (`flannel`, `coredns`, `metrics-server`,
    /// `aws-cloud-controller-manager`, `aws-ebs-csi-driver` and the CSI sidecars).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    pub assets: Vec<Asset>,
    /// The etcd release a cluster on an older 3.5 passes through before this manifest's etcd (etcd's upgrade
    /// guide: 3.5.26 or later before 3.6), with its digests.
    #[serde(default)]
    pub etcd_upgrade_bridge: Option<Bridge>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bridge {
    pub version: String,
    pub digest: BTreeMap<String, String>,
}

/// How a master gets the etcd a run installs, given the version it has (the version stamp, or what the installed
/// binary says), the version wanted and the manifest's bridge version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdMove {
    /// Nothing installed yet, the same minor, or one a plain binary swap and restart reaches.
    Install,
    /// 3.5 before the bridge release to 3.6: through the bridge first (one member at a time), then on.
    Bridge(String),
    /// What etcd does not support by replacing binaries, with what to do.
    Refuse(String),
}

/// `(major, minor, patch)` of `v3.5.26` / `3.5.26` / `etcd Version: 3.5.26`.
fn triple(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u32>());
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?))
}

/// See [`EtcdMove`]. Unknown installed versions are left to the install (a host with no stamp and no binary).
pub fn etcd_move(installed: Option<&str>, wanted: &str, bridge: Option<&str>) -> EtcdMove {
    let (Some(have), Some(want)) = (installed.and_then(triple), triple(wanted)) else {
        return EtcdMove::Install;
    };
    let pin = "pin spec.assets.files.etcd to the version kforge installed before, with its digest";
    if (want.0, want.1) < (have.0, have.1) {
        return EtcdMove::Refuse(format!(
            "etcd {} is installed and {wanted} is wanted: etcd does not move back a minor version by a binary \
             swap\n  hint: {pin}",
            installed.unwrap_or_default().trim()
        ));
    }
    if (want.0, want.1) == (have.0, have.1) {
        return EtcdMove::Install;
    }
    if want.0 != have.0 || want.1 != have.1 + 1 {
        return EtcdMove::Refuse(format!(
            "etcd {} is installed and {wanted} is wanted: etcd moves one minor version at a time\n  hint: {pin}, \
             then move one minor version per run",
            installed.unwrap_or_default().trim()
        ));
    }
    match bridge.and_then(|b| Some((b, triple(b)?))) {
        Some((b, bridge)) if (bridge.0, bridge.1) == (have.0, have.1) && have.2 < bridge.2 => {
            EtcdMove::Bridge(b.to_string())
        }
        _ => EtcdMove::Install,
    }
}

/// Prints the etcd version a master has: its version stamp, else (a host installed by an older kforge) what the
/// installed binary says; nothing when there is none.
pub fn installed_etcd_version_command() -> String {
    format!(
        "cat {STAMP_DIR}/etcd.version 2>/dev/null || {{ [ -x /opt/kforge/bin/etcd ] && /opt/kforge/bin/etcd --version \
         | sed -n 's/^etcd Version: /v/p'; }} || true"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error(
        "no asset manifest for Kubernetes {version}: kforge pins the files it installs, and has them for {known}\n  hint: set spec.kubernetesVersion to {known}"
    )]
    NoManifest { version: String, known: String },
    #[error(
        "asset {name} has no digest for {arch} in the manifest of Kubernetes {version}\n  hint: pin one with spec.assets.files.{name}.sha256"
    )]
    NoDigest {
        name: String,
        arch: String,
        version: String,
    },
}

/// The Kubernetes versions kforge has manifests for.
pub fn known_versions() -> Vec<&'static str> {
    MANIFESTS.iter().map(|(v, _)| *v).collect()
}

/// The manifest of `version` as kforge ships it.
pub fn manifest(version: &str) -> Result<Manifest, AssetError> {
    let (_, text) = MANIFESTS
        .iter()
        .find(|(v, _)| *v == version)
        .ok_or_else(|| AssetError::NoManifest {
            version: version.into(),
            known: known_versions().join(", "),
        })?;
    Ok(serde_norway::from_str(text).expect("the built-in asset manifests parse (tested)"))
}

/// One file for one host: where to get it and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub name: String,
    pub version: String,
    pub stage: Stage,
    pub upstream: String,
    /// Where the host downloads it from (the mirror's copy when a mirror is set).
    pub url: String,
    /// `sha256` or `sha512`.
    pub algorithm: String,
    pub hex: String,
    #[serde(skip)]
    extract: BTreeMap<String, String>,
    #[serde(skip)]
    extract_all: Option<String>,
    #[serde(skip)]
    binary: Option<String>,
}

/// `MIRROR/HOST/PATH` for an upstream `https://HOST/PATH`.
pub fn mirrored(mirror: &str, upstream: &str) -> String {
    let rest = upstream.split_once("://").map(|(_, r)| r).unwrap_or(upstream);
    format!("{}/{rest}", mirror.trim_end_matches('/'))
}

/// The architecture name of `uname -m`.
pub fn arch_of(uname_m: &str) -> Option<&'static str> {
    match uname_m.trim() {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        _ => None,
    }
}

impl Asset {
    pub fn for_role(&self, role: HostRole) -> bool {
        self.roles.contains(&role)
    }

    /// Where `arch` gets this asset from, with the spec's override (version, URL, digest) and mirror applied.
    pub fn resolve(
        &self,
        arch: &str,
        mirror: Option<&str>,
        overrides: &BTreeMap<String, AssetOverride>,
        k8s_version: &str,
    ) -> Result<Resolved, AssetError> {
        let own = overrides.get(&self.name);
        let version = own
            .and_then(|o| o.version.clone())
            .unwrap_or_else(|| self.version.clone());
        let fill = |s: &str| {
            s.replace("{arch}", arch)
                .replace("{version}", version.strip_prefix('v').unwrap_or(&version))
        };
        let upstream = fill(&own.and_then(|o| o.url.clone()).unwrap_or_else(|| self.url.clone()));
        // The manifest's digest pins the manifest's version only (the model requires a digest with a version).
        let digest = own
            .and_then(|o| o.digest.clone())
            .or_else(|| self.digest.get(arch).cloned())
            .ok_or_else(|| AssetError::NoDigest {
                name: self.name.clone(),
                arch: arch.into(),
                version: k8s_version.into(),
            })?;
        let (algorithm, hex) = digest.split_once(':').expect("digests are ALGO:HEX (validated)");
        let url = match mirror {
            Some(m) => mirrored(m, &upstream),
            None => upstream.clone(),
        };
        Ok(Resolved {
            name: self.name.clone(),
            version: version.clone(),
            stage: self.stage,
            upstream,
            url,
            algorithm: algorithm.into(),
            hex: hex.into(),
            extract: self.extract.iter().map(|(k, v)| (fill(k), fill(v))).collect(),
            extract_all: self.extract_all.clone(),
            binary: self.binary.clone(),
        })
    }
}

impl Manifest {
    /// The etcd bridge release as an install for `arch` (same paths and stamp as the etcd asset).
    pub fn etcd_bridge(
        &self,
        arch: &str,
        mirror: Option<&str>,
        k8s_version: &str,
    ) -> Result<Option<Resolved>, AssetError> {
        let (Some(bridge), Some(etcd)) = (&self.etcd_upgrade_bridge, self.assets.iter().find(|a| a.name == "etcd"))
        else {
            return Ok(None);
        };
        let digest = bridge.digest.get(arch).cloned().ok_or_else(|| AssetError::NoDigest {
            name: format!("etcd {}", bridge.version),
            arch: arch.into(),
            version: k8s_version.into(),
        })?;
        let pin = BTreeMap::from([(
            "etcd".to_string(),
            AssetOverride {
                version: Some(bridge.version.clone()),
                digest: Some(digest),
                url: None,
            },
        )]);
        etcd.resolve(arch, mirror, &pin, k8s_version).map(Some)
    }

    /// The version of asset `name` a cluster with `overrides` installs (the spec's pin, else the manifest's).
    pub fn version_of(&self, name: &str, overrides: &BTreeMap<String, AssetOverride>) -> Option<String> {
        overrides
            .get(name)
            .and_then(|o| o.version.clone())
            .or_else(|| self.assets.iter().find(|a| a.name == name).map(|a| a.version.clone()))
    }

    /// Every image by name, from `registry` instead of their own when one is given.
    pub fn images_in(&self, registry: Option<&str>) -> BTreeMap<String, String> {
        self.images
            .keys()
            .filter_map(|n| Some((n.clone(), self.image(n, registry)?)))
            .collect()
    }

    /// Image `name`, from `registry` instead of its own when one is given (see [`in_registry`]).
    pub fn image(&self, name: &str, registry: Option<&str>) -> Option<String> {
        let upstream = self.images.get(name)?;
        Some(match registry {
            Some(r) => in_registry(upstream, r),
            None => upstream.clone(),
        })
    }
}

/// The major version of `v2.2.3` / `1.7.22` (0 when it is not a version).
pub fn major_of(version: &str) -> u32 {
    version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// `reference` pulled from `registry` instead: the registry host of the reference (its first path component
/// when that names a host: it has a dot or a port, or is `localhost`) is replaced, the repository path and tag or
/// digest kept. `registry.k8s.io/coredns/coredns:v1.12.1` in `mirror:5000/k8s` is
/// `mirror:5000/k8s/coredns/coredns:v1.12.1`; Docker Hub's `library/busybox:1` keeps its whole path.
pub fn in_registry(reference: &str, registry: &str) -> String {
    let path = match reference.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => reference,
    };
    format!("{}/{path}", registry.trim_end_matches('/'))
}

/// Exit codes of the install script that mean something to kforge.
pub const EXIT_NO_CURL: i32 = 40;
pub const EXIT_DOWNLOAD: i32 = 41;
pub const EXIT_HTTP: i32 = 42;
pub const EXIT_DIGEST: i32 = 43;
pub const EXIT_UNPACK: i32 = 44;

/// Where hosts keep downloads (named by digest) and what they installed.
pub const CACHE_DIR: &str = "/var/cache/kforge/assets";
pub const STAMP_DIR: &str = "/var/lib/kforge/assets";

fn q(s: &str) -> String {
    crate::shell::shell_quote(s)
}

impl Resolved {
    /// The installed paths (a directory for `extractAll`).
    pub fn installs(&self) -> Vec<String> {
        let mut out: Vec<String> = self.extract.values().cloned().collect();
        out.extend(self.extract_all.clone());
        out.extend(self.binary.clone());
        out
    }

    pub fn digest(&self) -> String {
        format!("{}:{}", self.algorithm, self.hex)
    }

    /// A command that exits 0 when the host has this very asset installed (the stamp of its digest and every
    /// file it installs): the guard of [`Resolved::install_script`], and the rolling update's test of it.
    pub fn installed_check(&self) -> String {
        let stamp = format!("{STAMP_DIR}/{}.digest", self.name);
        let present: Vec<String> = self.installs().iter().map(|p| format!("[ -e {} ]", q(p))).collect();
        format!(
            "[ \"$(cat {stamp} 2>/dev/null)\" = {want} ] && {present}",
            stamp = q(&stamp),
            want = q(&self.digest()),
            present = present.join(" && "),
        )
    }

    /// One shell script, run as root on the host: nothing happens when the stamp says this digest is installed
    /// and every installed path exists (prints `unchanged`); else download (unless the cache has a verified
    /// copy), check the digest, unpack into a temporary directory, move each file into place and write the stamp
    /// last (prints `installed`). Failures exit with one of the `EXIT_*` codes and leave installed files alone.
    pub fn install_script(&self) -> String {
        let stamp = format!("{STAMP_DIR}/{}.digest", self.name);
        let base = self.upstream.rsplit('/').next().unwrap_or("download");
        let cached = format!("{CACHE_DIR}/{}-{base}", &self.hex[..16]);
        let sum = format!("{}sum", self.algorithm);
        let mut s = String::from("set -u\numask 022\n");
        s += &format!("if {}; then echo unchanged; exit 0; fi\n", self.installed_check());
        s += &format!("mkdir -p {CACHE_DIR} {STAMP_DIR}\n");
        s += &format!(
            "verify() {{ echo {hex}'  '\"$1\" | {sum} -c --status 2>/dev/null; }}\n",
            hex = q(&self.hex)
        );
        s += &format!(
            "if ! verify {cached}; then\n\
             \x20 command -v curl >/dev/null || {{ echo 'curl is not installed' >&2; exit {EXIT_NO_CURL}; }}\n\
             \x20 rm -f {cached}.partial\n\
             \x20 code=$(curl -sS -L --retry 3 --retry-connrefused --connect-timeout 10 -o {cached}.partial -w '%{{http_code}}' {url}) \
             || {{ rm -f {cached}.partial; exit {EXIT_DOWNLOAD}; }}\n\
             \x20 if [ \"$code\" != 200 ]; then rm -f {cached}.partial; echo \"HTTP $code\" >&2; exit {EXIT_HTTP}; fi\n\
             \x20 if ! verify {cached}.partial; then got=$({sum} {cached}.partial | cut -d' ' -f1); rm -f {cached}.partial; \
             echo \"{algo}:$got\" >&2; exit {EXIT_DIGEST}; fi\n\
             \x20 mv -f {cached}.partial {cached}\n\
             fi\n",
            cached = q(&cached),
            url = q(&self.url),
            algo = self.algorithm,
        );
        s += &format!(
            "work=$(mktemp -d {STAMP_DIR}/.{}.XXXXXX) || exit {EXIT_UNPACK}\ntrap 'rm -rf \"$work\"' EXIT\n",
            self.name
        );
        if !self.extract.is_empty() {
            let members: Vec<String> = self.extract.keys().map(|m| q(m)).collect();
            s += &format!(
                "tar -xzf {cached} -C \"$work\" {} || {{ echo 'the archive lacks a file kforge installs' >&2; exit {EXIT_UNPACK}; }}\n",
                members.join(" "),
                cached = q(&cached)
            );
            for (member, dest) in &self.extract {
                s += &format!(
                    "mkdir -p \"$(dirname {d})\" && install -m 0755 \"$work\"/{m} {d}.kforge-new && mv -f {d}.kforge-new {d} || exit {EXIT_UNPACK}\n",
                    d = q(dest),
                    m = q(member)
                );
            }
        }
        if let Some(dir) = &self.extract_all {
            s += &format!(
                "tar -xzf {cached} -C \"$work\" || exit {EXIT_UNPACK}\nmkdir -p {d} && for f in \"$work\"/*; do \
                 install -m 0755 \"$f\" {d}/\"$(basename \"$f\")\".kforge-new && mv -f {d}/\"$(basename \"$f\")\".kforge-new {d}/\"$(basename \"$f\")\" || exit {EXIT_UNPACK}; done\n",
                cached = q(&cached),
                d = q(dir)
            );
        }
        if let Some(dest) = &self.binary {
            s += &format!(
                "mkdir -p \"$(dirname {d})\" && install -m 0755 {cached} {d}.kforge-new && mv -f {d}.kforge-new {d} || exit {EXIT_UNPACK}\n",
                d = q(dest),
                cached = q(&cached)
            );
        }
        // The version stamp first: the digest stamp is what says "installed", and it is written last.
        s += &format!(
            "echo {version} > {vstamp}.new && mv -f {vstamp}.new {vstamp}\n",
            version = q(&self.version),
            vstamp = q(&format!("{STAMP_DIR}/{}.version", self.name))
        );
        s += &format!(
            "echo {want} > {stamp}.new && mv -f {stamp}.new {stamp}\necho installed\n",
            want = q(&self.digest()),
            stamp = q(&stamp)
        );
        s
    }

    /// What a failed install script's exit status means, with what to do about it.
    pub fn failure(&self, status: i32, stderr: &str) -> (String, String) {
        let said = stderr.trim().lines().last().unwrap_or_default().to_string();
        let listing = "`kforge get assets --version V` lists every file, its URL and digest";
        match status {
            EXIT_NO_CURL => (
                format!("asset {}: curl is not installed on the host", self.name),
                "install curl on the host image (every common cloud image has it)".into(),
            ),
            EXIT_HTTP | EXIT_DOWNLOAD => (
                format!(
                    "asset {} {} is missing: {} answered {}",
                    self.name,
                    self.version,
                    self.url,
                    if said.is_empty() { "nothing".into() } else { said }
                ),
                format!(
                    "put {} (upstream {}) at that URL, or fix spec.assets.mirror, then re-run: nothing of it was installed; {listing}",
                    self.upstream.rsplit('/').next().unwrap_or_default(),
                    self.upstream
                ),
            ),
            EXIT_DIGEST => (
                format!(
                    "asset {} from {} has digest {said}, not the pinned {}",
                    self.name,
                    self.url,
                    self.digest()
                ),
                "the file was discarded and nothing installed; replace the mirror's copy with the published file"
                    .into(),
            ),
            _ => (
                format!("asset {}: unpacking failed (exit {status}): {said}", self.name),
                "the download was verified; check free disk space on the host and re-run".into(),
            ),
        }
    }
}

/// Every file of `version` for every architecture, as `kforge get assets` prints them.
pub fn listing(
    version: &str,
    mirror: Option<&str>,
    overrides: &BTreeMap<String, AssetOverride>,
) -> Result<Vec<Resolved>, AssetError> {
    let m = manifest(version)?;
    let mut out = Vec::new();
    for asset in &m.assets {
        for arch in asset.digest.keys() {
            out.push(asset.resolve(arch, mirror, overrides, version)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_manifest_parses_and_pins_both_architectures() {
        for v in known_versions() {
            let m = manifest(v).unwrap();
            assert_eq!(m.kubernetes_version, v);
            let bridge = m
                .etcd_upgrade_bridge
                .iter()
                .map(|b| (format!("etcd {}", b.version), &b.digest));
            for (name, digests) in m.assets.iter().map(|a| (a.name.clone(), &a.digest)).chain(bridge) {
                for arch in ["amd64", "arm64"] {
                    let d = digests.get(arch).unwrap_or_else(|| panic!("{name} {arch}"));
                    let (algo, hex) = d.split_once(':').unwrap();
                    let len = match algo {
                        "sha256" => 64,
                        "sha512" => 128,
                        other => panic!("{other}"),
                    };
                    assert_eq!(hex.len(), len, "{v}: {name}");
                    assert!(
                        hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                        "{v}: {name}"
                    );
                }
            }
            for a in &m.assets {
                let ways = [!a.extract.is_empty(), a.extract_all.is_some(), a.binary.is_some()];
                assert_eq!(ways.iter().filter(|w| **w).count(), 1, "{} installs one way", a.name);
                assert!(a.url.starts_with("https://"), "{}", a.name);
            }
        }
    }

    #[test]
    fn mirror_keeps_host_and_path_and_override_replaces_url_and_digest() {
        let m = manifest("1.34").unwrap();
        let etcd = m.assets.iter().find(|a| a.name == "etcd").unwrap();
        let r = etcd
            .resolve("amd64", Some("http://10.0.0.5:8080/k/"), &BTreeMap::new(), "1.34")
            .unwrap();
        assert_eq!(
            r.url,
            "http://10.0.0.5:8080/k/github.com/etcd-io/etcd/releases/download/v3.6.5/etcd-v3.6.5-linux-amd64.tar.gz"
        );
        assert_eq!(r.algorithm, "sha256");
        assert!(r.installs().contains(&"/opt/kforge/bin/etcdutl".to_string()));
        assert!(
            r.extract.contains_key("etcd-v3.6.5-linux-amd64/etcdctl"),
            "{:?}",
            r.extract
        );
        let mut over = BTreeMap::new();
        over.insert(
            "etcd".to_string(),
            AssetOverride {
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                ..AssetOverride::default()
            },
        );
        let r = etcd.resolve("arm64", None, &over, "1.34").unwrap();
        assert_eq!(r.hex, "a".repeat(64));
        assert!(r.url.ends_with("linux-arm64.tar.gz"));
    }

    #[test]
    fn a_pinned_version_moves_url_members_and_stamps() {
        let m = manifest("1.34").unwrap();
        let mut over = BTreeMap::new();
        over.insert(
            "etcd".to_string(),
            AssetOverride {
                version: Some("v3.5.26".into()),
                digest: Some(format!("sha256:{}", "b".repeat(64))),
                ..AssetOverride::default()
            },
        );
        let etcd = m.assets.iter().find(|a| a.name == "etcd").unwrap();
        let r = etcd.resolve("amd64", None, &over, "1.34").unwrap();
        assert_eq!(r.version, "v3.5.26");
        assert_eq!(
            r.url,
            "https://github.com/etcd-io/etcd/releases/download/v3.5.26/etcd-v3.5.26-linux-amd64.tar.gz"
        );
        assert!(r.extract.contains_key("etcd-v3.5.26-linux-amd64/etcd"));
        assert!(r.install_script().contains("/var/lib/kforge/assets/etcd.version"));
        assert_eq!(m.version_of("etcd", &over).as_deref(), Some("v3.5.26"));
        assert_eq!(m.version_of("containerd", &over).as_deref(), Some("v2.2.3"));
        assert_eq!(major_of("v2.2.3"), 2);
        assert_eq!(major_of("1.7.22"), 1);
    }

    #[test]
    fn every_version_has_the_assets_and_images_a_cluster_needs() {
        // What the bootstrap installs on each role and what the addons and containerd name.
        let files = [
            "etcd",
            "containerd",
            "runc",
            "cni-plugins",
            "kubernetes-server",
            "kubernetes-node",
        ];
        let images = [
            "pause",
            "flannel",
            "flannel-cni-plugin",
            "coredns",
            "metrics-server",
            "aws-cloud-controller-manager",
            "aws-ebs-csi-driver",
            "csi-provisioner",
            "csi-attacher",
            "csi-resizer",
            "csi-node-driver-registrar",
            "livenessprobe",
        ];
        assert_eq!(known_versions(), ["1.33", "1.34", "1.35"]);
        for v in known_versions() {
            let m = manifest(v).unwrap();
            for f in files {
                assert!(m.assets.iter().any(|a| a.name == f), "{v}: {f}");
            }
            for role in [HostRole::Master, HostRole::Worker] {
                let has = |name: &str| m.assets.iter().any(|a| a.name == name && a.for_role(role));
                assert!(
                    has("kubernetes-node") && has("containerd") && has("cni-plugins"),
                    "{v} {role:?}"
                );
            }
            for i in images {
                let image = m.images.get(i).unwrap_or_else(|| panic!("{v}: image {i}"));
                assert!(image.contains('/') && image.rsplit_once(':').is_some(), "{v}: {image}");
            }
            assert!(m.release.starts_with(&format!("v{v}.")), "{v}: release {}", m.release);
            let version = |name: &str| m.version_of(name, &BTreeMap::new()).unwrap();
            let minor: u32 = v[2..].parse().unwrap();
            // etcd 3.6 from 1.34 on (kubeadm's), containerd 2.x from 1.34 on (1.36 drops 1.7).
            assert_eq!(version("etcd").starts_with("v3.6."), minor >= 34, "{v}");
            assert_eq!(major_of(&version("containerd")) >= 2, minor >= 34, "{v}");
            // Kubernetes' own tarballs carry the release's version in their URL.
            let server = m.assets.iter().find(|a| a.name == "kubernetes-server").unwrap();
            let r = server.resolve("amd64", None, &BTreeMap::new(), v).unwrap();
            assert!(r.url.contains(&format!("/{}/", m.release)), "{}", r.url);
            assert_eq!(r.algorithm, "sha512");
        }
    }

    #[test]
    fn etcd_moves_one_minor_at_a_time_and_through_3_5_26_to_3_6() {
        let m = manifest("1.34").unwrap();
        let bridge = m.etcd_upgrade_bridge.as_ref().map(|b| b.version.as_str());
        assert_eq!(bridge, Some("v3.5.26"));
        assert_eq!(etcd_move(None, "v3.6.5", bridge), EtcdMove::Install);
        assert_eq!(etcd_move(Some("v3.6.5"), "v3.6.5", bridge), EtcdMove::Install);
        assert_eq!(etcd_move(Some("v3.6.0"), "v3.6.5", bridge), EtcdMove::Install);
        // What an older kforge installed (and what its binary prints).
        assert_eq!(
            etcd_move(Some("v3.5.12"), "v3.6.5", bridge),
            EtcdMove::Bridge("v3.5.26".into())
        );
        assert_eq!(
            etcd_move(Some("etcd Version: 3.5.12\n"), "v3.6.5", bridge),
            EtcdMove::Bridge("v3.5.26".into())
        );
        assert_eq!(etcd_move(Some("v3.5.26"), "v3.6.5", bridge), EtcdMove::Install);
        assert_eq!(etcd_move(Some("v3.5.27"), "v3.6.5", bridge), EtcdMove::Install);
        assert!(matches!(etcd_move(Some("v3.4.23"), "v3.6.5", bridge), EtcdMove::Refuse(m) if m.contains("one minor")));
        assert!(matches!(etcd_move(Some("v3.6.5"), "v3.5.26", bridge), EtcdMove::Refuse(m) if m.contains("back")));
        assert_eq!(etcd_move(Some("v3.4.23"), "v3.5.26", None), EtcdMove::Install);
        // The bridge is the etcd asset at 3.5.26, with the publisher's digest, at the same paths and stamp.
        let r = m.etcd_bridge("amd64", None, "1.34").unwrap().unwrap();
        assert_eq!(r.name, "etcd");
        assert_eq!(r.version, "v3.5.26");
        assert!(r.url.ends_with("/v3.5.26/etcd-v3.5.26-linux-amd64.tar.gz"), "{}", r.url);
        assert_eq!(
            r.hex,
            "0a682a91201dc8351d507210bc30b021a11e254eab806f03224b51e8fad29abb"
        );
        assert!(r.installs().contains(&"/opt/kforge/bin/etcd".to_string()));
        assert!(manifest("1.33").unwrap().etcd_upgrade_bridge.is_none());
        let sh = std::process::Command::new("sh")
            .args(["-n", "-c", &installed_etcd_version_command()])
            .output()
            .unwrap();
        assert!(sh.status.success());
    }

    #[test]
    fn an_image_registry_replaces_the_registry_host_only() {
        let m = manifest("1.34").unwrap();
        let r = Some("mirror.internal:5000/k8s");
        assert_eq!(
            m.image("coredns", r).unwrap(),
            "mirror.internal:5000/k8s/coredns/coredns:v1.12.1"
        );
        assert_eq!(
            m.image("aws-ebs-csi-driver", r).unwrap(),
            "mirror.internal:5000/k8s/ebs-csi-driver/aws-ebs-csi-driver:v1.50.0"
        );
        assert_eq!(
            m.image("flannel", r).unwrap(),
            "mirror.internal:5000/k8s/flannel-io/flannel:v0.27.3"
        );
        assert_eq!(in_registry("library/busybox:1", "m:1"), "m:1/library/busybox:1");
        assert_eq!(in_registry("localhost/x:1", "m"), "m/x:1");
        assert_eq!(m.image("coredns", None).unwrap(), m.images["coredns"]);
    }

    #[test]
    fn install_script_is_valid_shell_and_guards_on_the_stamp() {
        for r in known_versions()
            .into_iter()
            .flat_map(|v| listing(v, Some("http://m"), &BTreeMap::new()).unwrap())
        {
            let script = r.install_script();
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                r.name,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(script.contains(&format!("{STAMP_DIR}/{}.digest", r.name)));
            assert!(script.contains(&format!("{}sum", r.algorithm)));
        }
        assert!(matches!(manifest("1.20"), Err(AssetError::NoManifest { .. })));
    }

    #[test]
    fn a_missing_file_names_asset_and_url() {
        let r = &listing("1.34", Some("http://m:1"), &BTreeMap::new()).unwrap()[0];
        let (msg, hint) = r.failure(EXIT_HTTP, "HTTP 404\n");
        assert!(
            msg.contains(&r.name) && msg.contains(&r.url) && msg.contains("HTTP 404"),
            "{msg}"
        );
        assert!(hint.contains("re-run"), "{hint}");
    }
}
