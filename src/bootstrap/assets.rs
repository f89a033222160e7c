//! The files a self-built cluster installs (etcd, containerd, runc, CNI plugins, the Kubernetes binaries): one
//! manifest per Kubernetes version (`templates/assets/`), with upstream URLs and the digests their publishers list.
//! Every host downloads its files itself (from upstream or `spec.assets.mirror`) and checks the digest before
//! anything is unpacked; installs go through temporary names, so a failed download leaves nothing half-written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::AssetOverride;
use crate::spec::HostRole;

/// Built-in manifests by Kubernetes minor version.
const MANIFESTS: &[(&str, &str)] = &[("1.34", include_str!("../../templates/assets/1.34.yaml"))];

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
    /// Upstream URL; `{arch}` is the host's architecture.
    pub url: String,
    /// `sha256:HEX` or `sha512:HEX` by architecture.
    pub digest: BTreeMap<String, String>,
    /// Archive member → installed path.
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
    /// Container images of the core addons by name (`flannel`, `flannel-cni-plugin`, `coredns`).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    pub assets: Vec<Asset>,
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

    /// Where `arch` gets this asset from, with the spec's override and mirror applied.
    pub fn resolve(
        &self,
        arch: &str,
        mirror: Option<&str>,
        overrides: &BTreeMap<String, AssetOverride>,
        k8s_version: &str,
    ) -> Result<Resolved, AssetError> {
        let own = overrides.get(&self.name);
        let upstream = own
            .and_then(|o| o.url.clone())
            .unwrap_or_else(|| self.url.clone())
            .replace("{arch}", arch);
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
        let a = |s: &String| s.replace("{arch}", arch);
        Ok(Resolved {
            name: self.name.clone(),
            version: self.version.clone(),
            stage: self.stage,
            upstream,
            url,
            algorithm: algorithm.into(),
            hex: hex.into(),
            extract: self.extract.iter().map(|(k, v)| (a(k), a(v))).collect(),
            extract_all: self.extract_all.clone(),
            binary: self.binary.clone(),
        })
    }
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
    super::ssh::shell_quote(s)
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
            for a in &m.assets {
                for arch in ["amd64", "arm64"] {
                    let d = a.digest.get(arch).unwrap_or_else(|| panic!("{} {arch}", a.name));
                    let (algo, hex) = d.split_once(':').unwrap();
                    let len = match algo {
                        "sha256" => 64,
                        "sha512" => 128,
                        other => panic!("{other}"),
                    };
                    assert_eq!(hex.len(), len, "{}", a.name);
                    assert!(hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                }
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
            "http://10.0.0.5:8080/k/github.com/etcd-io/etcd/releases/download/v3.5.12/etcd-v3.5.12-linux-amd64.tar.gz"
        );
        assert_eq!(r.algorithm, "sha256");
        assert!(r.installs().contains(&"/opt/kforge/bin/etcdctl".to_string()));
        let mut over = BTreeMap::new();
        over.insert(
            "etcd".to_string(),
            AssetOverride {
                url: None,
                digest: Some(format!("sha256:{}", "a".repeat(64))),
            },
        );
        let r = etcd.resolve("arm64", None, &over, "1.34").unwrap();
        assert_eq!(r.hex, "a".repeat(64));
        assert!(r.url.ends_with("linux-arm64.tar.gz"));
    }

    #[test]
    fn install_script_is_valid_shell_and_guards_on_the_stamp() {
        for r in listing("1.34", Some("http://m"), &BTreeMap::new()).unwrap() {
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
