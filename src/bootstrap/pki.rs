//! kforge's own PKI for a self-built cluster, as kubeadm lays it out: three CAs (cluster, etcd, front proxy), the
//! service-account key pair, and every leaf certificate the control plane, etcd and the nodes need. Files live in a
//! private directory (0700, files 0600) of the state store and are reused on re-runs: CAs are never replaced, a
//! leaf is issued again only when what it must say changed (a new master's address in the apiserver's SANs) or it
//! nears its expiry. Keys are ECDSA P-256; nothing here prints a key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_private;

const CA_YEARS: i64 = 10;
const LEAF_DAYS: i64 = 365;
/// Leaves closer than this to their expiry are issued again.
const RENEW_WITHIN_DAYS: i64 = 30;

/// The three certificate authorities, by file stem.
pub const CLUSTER_CA: &str = "ca";
pub const ETCD_CA: &str = "etcd-ca";
pub const FRONT_PROXY_CA: &str = "front-proxy-ca";

/// A control-plane machine, as its certificates name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: IpAddr,
}

/// What the certificates must say about the cluster.
#[derive(Debug, Clone)]
pub struct PkiRequest {
    pub cluster: String,
    pub masters: Vec<Member>,
    /// Every machine that runs a kubelet (masters included): its node name and address.
    pub nodes: Vec<Member>,
    /// The API endpoint clients use (load balancer DNS name or address), when it is not a master's address.
    pub api_endpoint: Option<String>,
    /// The service network; its first address is the `kubernetes` service's.
    pub service_cidr: Ipv4Net,
    pub cluster_domain: String,
}

/// One leaf certificate: who it is, which CA signs it, what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafSpec {
    pub ca: String,
    pub common_name: String,
    pub organization: Option<String>,
    pub server: bool,
    pub client: bool,
    pub sans: Vec<String>,
}

impl PkiRequest {
    /// The `kubernetes` service's cluster IP: the first address of the service network.
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        IpAddr::V4(self.service_cidr.hosts().next().unwrap_or(self.service_cidr.network()))
    }

    /// Every leaf this cluster needs, by file stem.
    pub fn leaves(&self) -> BTreeMap<String, LeafSpec> {
        let leaf = |ca: &str, cn: &str, o: Option<&str>, server: bool, client: bool, sans: Vec<String>| LeafSpec {
            ca: ca.into(),
            common_name: cn.into(),
            organization: o.map(str::to_string),
            server,
            client,
            sans,
        };
        let mut out = BTreeMap::new();
        let domain = &self.cluster_domain;
        let mut api_sans: Vec<String> = vec![
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{domain}"),
            "localhost".into(),
            "127.0.0.1".into(),
            self.kubernetes_service_ip().to_string(),
        ];
        for m in &self.masters {
            api_sans.push(m.name.clone());
            api_sans.push(m.address.to_string());
        }
        api_sans.extend(self.api_endpoint.clone());
        dedup(&mut api_sans);
        out.insert(
            "apiserver".into(),
            leaf(CLUSTER_CA, "kube-apiserver", None, true, false, api_sans),
        );
        out.insert(
            "apiserver-kubelet-client".into(),
            leaf(
                CLUSTER_CA,
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
                false,
                true,
                Vec::new(),
            ),
        );
        out.insert(
            "apiserver-etcd-client".into(),
            leaf(ETCD_CA, "kube-apiserver-etcd-client", None, false, true, Vec::new()),
        );
        out.insert(
            "front-proxy-client".into(),
            leaf(FRONT_PROXY_CA, "front-proxy-client", None, false, true, Vec::new()),
        );
        out.insert(
            "admin".into(),
            leaf(
                CLUSTER_CA,
                "kubernetes-admin",
                Some("system:masters"),
                false,
                true,
                Vec::new(),
            ),
        );
        out.insert(
            "controller-manager".into(),
            leaf(
                CLUSTER_CA,
                "system:kube-controller-manager",
                None,
                false,
                true,
                Vec::new(),
            ),
        );
        out.insert(
            "scheduler".into(),
            leaf(CLUSTER_CA, "system:kube-scheduler", None, false, true, Vec::new()),
        );
        out.insert(
            "kube-proxy".into(),
            leaf(
                CLUSTER_CA,
                "system:kube-proxy",
                Some("system:node-proxier"),
                false,
                true,
                Vec::new(),
            ),
        );
        // kforge's own etcd client, for health checks (`etcdctl endpoint health`).
        out.insert(
            "etcd-healthcheck-client".into(),
            leaf(ETCD_CA, "kforge-etcd-healthcheck-client", None, false, true, Vec::new()),
        );
        for m in &self.masters {
            let mut sans = vec![
                m.name.clone(),
                m.address.to_string(),
                "localhost".into(),
                "127.0.0.1".into(),
            ];
            dedup(&mut sans);
            out.insert(
                format!("etcd-server-{}", m.name),
                leaf(ETCD_CA, &m.name, None, true, true, sans.clone()),
            );
            let mut peer = vec![m.name.clone(), m.address.to_string()];
            dedup(&mut peer);
            out.insert(
                format!("etcd-peer-{}", m.name),
                leaf(ETCD_CA, &m.name, None, true, true, peer),
            );
        }
        for n in &self.nodes {
            let name = &n.name;
            out.insert(
                format!("kubelet-{name}"),
                leaf(
                    CLUSTER_CA,
                    &format!("system:node:{name}"),
                    Some("system:nodes"),
                    false,
                    true,
                    Vec::new(),
                ),
            );
            // The kubelet's serving certificate, signed by the cluster CA rather than self-signed, so that the API
            // server (`--kubelet-certificate-authority`) and metrics-server can verify whom they talk to.
            out.insert(
                format!("kubelet-serving-{name}"),
                leaf(
                    CLUSTER_CA,
                    &format!("system:node:{name}"),
                    Some("system:nodes"),
                    true,
                    false,
                    vec![name.clone(), n.address.to_string()],
                ),
            );
        }
        out
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches a log.
        f.write_str("CertKey { cert_pem, key_pem: *** }")
    }
}

/// What `ensure` did, by file stem.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PkiReport {
    pub created: Vec<String>,
    pub reissued: Vec<String>,
    pub reused: Vec<String>,
}

/// A cluster's PKI on disk.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub certs: BTreeMap<String, CertKey>,
    /// The service-account signing key (PEM private key) and its public half.
    pub service_account_key: String,
    pub service_account_pub: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the service-account key and the certificates' keys never reach a log.
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("certs", &self.certs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Which leaf spec each file was issued for, so a changed spec is noticed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    leaves: BTreeMap<String, LeafSpec>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

fn validity(params: &mut CertificateParams, days: i64) -> anyhow::Result<()> {
    let now = now_secs();
    // An hour of slack for machines whose clocks lag.
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 3600)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + days * 86_400)?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Seconds since the epoch at which a PEM certificate expires.
fn not_after(cert_pem: &str) -> anyhow::Result<i64> {
    let der = pem::parse(cert_pem).context("not a PEM certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).context("not an X.509 certificate")?;
    Ok(cert.validity().not_after.timestamp())
}

impl Pki {
    /// Loads what exists under `dir` and creates or re-issues what is missing or outdated.
    pub fn ensure(dir: &Path, req: &PkiRequest) -> anyhow::Result<(Pki, PkiReport)> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut report = PkiReport::default();
        let mut certs = BTreeMap::new();
        for (ca, cn) in [
            (CLUSTER_CA, "kubernetes"),
            (ETCD_CA, "etcd-ca"),
            (FRONT_PROXY_CA, "front-proxy-ca"),
        ] {
            let pair = Self::ensure_ca(dir, ca, &format!("{cn} ({})", req.cluster), &mut report)?;
            certs.insert(ca.to_string(), pair);
        }
        let (service_account_key, service_account_pub) = Self::ensure_service_account(dir, &mut report)?;

        let manifest_path = dir.join("manifest.json");
        let mut manifest: Manifest = read(&manifest_path)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let leaves = req.leaves();
        for (name, spec) in &leaves {
            let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
            let existing = match (read(&cert_path)?, read(&key_path)?) {
                (Some(c), Some(k)) => Some(CertKey {
                    cert_pem: c,
                    key_pem: k,
                }),
                _ => None,
            };
            let fresh = existing.as_ref().is_some_and(|e| {
                manifest.leaves.get(name) == Some(spec)
                    && not_after(&e.cert_pem).is_ok_and(|t| t > now_secs() + RENEW_WITHIN_DAYS * 86_400)
            });
            if fresh {
                report.reused.push(name.clone());
                certs.insert(name.clone(), existing.expect("fresh implies existing"));
                continue;
            }
            let ca = certs.get(&spec.ca).expect("CAs are made first").clone();
            let issued = issue(&ca, spec).with_context(|| format!("cannot issue the {name} certificate"))?;
            write_private(&key_path, issued.key_pem.as_bytes())?;
            write_private(&cert_path, issued.cert_pem.as_bytes())?;
            if existing.is_some() {
                report.reissued.push(name.clone());
            } else {
                report.created.push(name.clone());
            }
            manifest.leaves.insert(name.clone(), spec.clone());
            certs.insert(name.clone(), issued);
        }
        // Leaves of machines that left the cluster are forgotten (their files stay until the state is deleted).
        manifest.leaves.retain(|name, _| leaves.contains_key(name));
        write_private(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
        Ok((
            Pki {
                dir: dir.to_path_buf(),
                certs,
                service_account_key,
                service_account_pub,
            },
            report,
        ))
    }

    fn ensure_ca(dir: &Path, name: &str, common_name: &str, report: &mut PkiReport) -> anyhow::Result<CertKey> {
        let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        match (read(&cert_path)?, read(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => {
                // Check it is usable now rather than when the first leaf needs it.
                let key = KeyPair::from_pem(&key_pem)
                    .with_context(|| format!("{}: not a private key", key_path.display()))?;
                Issuer::from_ca_cert_pem(&cert_pem, key)
                    .with_context(|| format!("{}: not a CA certificate", cert_path.display()))?;
                report.reused.push(name.to_string());
                Ok(CertKey { cert_pem, key_pem })
            }
            (Some(_), None) => bail!(
                "{} exists without its key {}\n  hint: restore the key from a backup of the state store; replacing the \
                 CA would cut every machine off",
                cert_path.display(),
                key_path.display()
            ),
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, common_name);
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, CA_YEARS * 365)?;
                let cert = params.self_signed(&key)?;
                let pair = CertKey {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                };
                write_private(&key_path, pair.key_pem.as_bytes())?;
                write_private(&cert_path, pair.cert_pem.as_bytes())?;
                report.created.push(name.to_string());
                Ok(pair)
            }
        }
    }

    fn ensure_service_account(dir: &Path, report: &mut PkiReport) -> anyhow::Result<(String, String)> {
        let (key_path, pub_path) = (dir.join("sa.key"), dir.join("sa.pub"));
        if let (Some(k), Some(p)) = (read(&key_path)?, read(&pub_path)?) {
            report.reused.push("sa".into());
            return Ok((k, p));
        }
        let key = KeyPair::generate()?;
        let (k, p) = (key.serialize_pem(), key.public_key_pem());
        write_private(&key_path, k.as_bytes())?;
        write_private(&pub_path, p.as_bytes())?;
        report.created.push("sa".into());
        Ok((k, p))
    }
}

/// Issues a leaf for `spec`, signed by `ca`, with a new key.
fn issue(ca: &CertKey, spec: &LeafSpec) -> anyhow::Result<CertKey> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = &spec.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, spec.common_name.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    if spec.server {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| {
            Ok(match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(s.clone().try_into()?),
            })
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    validity(&mut params, LEAF_DAYS)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn request(masters: usize) -> PkiRequest {
        let names = ["m1", "m2", "m3", "m4"];
        let masters: Vec<Member> = (0..masters)
            .map(|i| Member {
                name: names[i].into(),
                address: format!("172.30.0.{}", 11 + i).parse().unwrap(),
            })
            .collect();
        let mut nodes: Vec<Member> = masters.clone();
        for (i, w) in ["w1", "w2"].iter().enumerate() {
            nodes.push(Member {
                name: w.to_string(),
                address: format!("172.30.1.{}", 11 + i).parse().unwrap(),
            });
        }
        PkiRequest {
            cluster: "lab".into(),
            masters,
            nodes,
            api_endpoint: Some("api.lab.example.com".into()),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn openssl(args: &[&str]) -> String {
        let out = Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn every_certificate_verifies_against_its_ca_with_the_right_names() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let req = request(3);
        let (pki, report) = Pki::ensure(&pki_dir, &req).unwrap();
        assert!(report.reused.is_empty());
        for (name, spec) in req.leaves() {
            let ca = pki_dir.join(format!("{}.crt", spec.ca));
            let cert = pki_dir.join(format!("{name}.crt"));
            let purpose = if spec.server { "sslserver" } else { "sslclient" };
            let out = openssl(&[
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                ca.to_str().unwrap(),
                cert.to_str().unwrap(),
            ]);
            assert!(out.trim().ends_with(": OK"), "{name}: {out}");
        }
        // The etcd CA does not vouch for cluster certificates, and the other way round.
        let cross = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(pki_dir.join("etcd-ca.crt"))
            .arg(pki_dir.join("apiserver.crt"))
            .output()
            .unwrap();
        assert!(!cross.status.success());

        let text = openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            pki_dir.join("apiserver.crt").to_str().unwrap(),
        ]);
        for san in [
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "DNS:api.lab.example.com",
            "DNS:m2",
            "IP Address:10.96.0.1",
            "IP Address:172.30.0.11",
            "IP Address:172.30.0.13",
            "IP Address:127.0.0.1",
        ] {
            assert!(text.contains(san), "{san} missing from {text}");
        }
        let subject = openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-in",
            pki_dir.join("kubelet-w1.crt").to_str().unwrap(),
        ]);
        assert!(
            subject.contains("O = system:nodes") && subject.contains("CN = system:node:w1"),
            "{subject}"
        );
        let etcd = openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-in",
            pki_dir.join("etcd-peer-m3.crt").to_str().unwrap(),
        ]);
        assert!(
            etcd.contains("IP Address:172.30.0.13")
                && etcd.contains("TLS Web Server Authentication")
                && etcd.contains("TLS Web Client Authentication"),
            "{etcd}"
        );

        // Every file private, the directory too; keys never in Debug output.
        assert_eq!(std::fs::metadata(&pki_dir).unwrap().permissions().mode() & 0o777, 0o700);
        for entry in std::fs::read_dir(&pki_dir).unwrap() {
            let e = entry.unwrap();
            assert_eq!(
                e.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                e.file_name()
            );
        }
        assert!(!format!("{pki:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn re_runs_reuse_and_a_new_master_reissues_only_what_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Pki::ensure(dir.path(), &request(3)).unwrap();
        let (second, report) = Pki::ensure(dir.path(), &request(3)).unwrap();
        assert!(report.created.is_empty() && report.reissued.is_empty(), "{report:?}");
        assert_eq!(first.certs["apiserver"].cert_pem, second.certs["apiserver"].cert_pem);
        assert_eq!(first.service_account_key, second.service_account_key);

        let (third, report) = Pki::ensure(dir.path(), &request(4)).unwrap();
        assert_eq!(report.reissued, ["apiserver"]);
        assert_eq!(
            report.created,
            ["etcd-peer-m4", "etcd-server-m4", "kubelet-m4", "kubelet-serving-m4"],
            "the new master's own certificates"
        );
        assert_eq!(first.certs["ca"].cert_pem, third.certs["ca"].cert_pem, "the CA is kept");
        assert_eq!(first.certs["admin"].cert_pem, third.certs["admin"].cert_pem);
    }

    #[test]
    fn a_ca_without_its_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        Pki::ensure(dir.path(), &request(1)).unwrap();
        std::fs::remove_file(dir.path().join("etcd-ca.key")).unwrap();
        let e = Pki::ensure(dir.path(), &request(1)).unwrap_err().to_string();
        assert!(
            e.contains("etcd-ca.crt exists without its key") && e.contains("hint: restore"),
            "{e}"
        );
    }
}
