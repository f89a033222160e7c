//! The list of hosts a cluster's bootstrap works on, with how to reach each one and how to recognise it: from the
//! spec (`provider: hosts`, checked up front, no cloud call) or from the cluster's EC2 instances (`provider: ec2`),
//! whose SSH host keys are read from their console output before anyone connects to them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::aws::inventory::Inventory;
use crate::aws::tags;
use crate::aws::{Aws, aws_err};
use crate::bootstrap::host::{BootstrapHost, ExpectedHostKey};
use crate::engine::Step;
use crate::engine::wait::{Wait, not_yet};
use crate::model::{Cluster, FieldError, Taint, ValidationError};
use crate::progress::{Event, Reporter};
use crate::providers::ec2::{GROUP_TAG, ROLE_TAG};
use crate::providers::host_keys::{self, HostKeys};
use crate::providers::machine::public_key_fingerprint;
use crate::spec::{HostRole, Topology};

/// The hosts and the API endpoint they serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostList {
    pub cluster: String,
    /// `host:port` of the Kubernetes API (load balancer, or the first master).
    pub api_endpoint: Option<String>,
    pub hosts: Vec<BootstrapHost>,
}

/// Problems with a private key file that would only show when the first SSH connection fails.
fn identity_problem(path: &Path) -> Option<(String, String)> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Some((
                format!("cannot read {}: {e}", path.display()),
                "give the private key used to log in, relative to the spec file".into(),
            ));
        }
    };
    if !meta.is_file() {
        return Some((
            format!("{} is not a file", path.display()),
            "give the private key file".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some((
                format!("{} is readable by others (mode {mode:o})", path.display()),
                format!("chmod 600 {} (ssh refuses keys others can read)", path.display()),
            ));
        }
    }
    // The first bytes say what the file is; reading no more keeps a wrong path (a device) harmless.
    let head = std::fs::File::open(path).ok().map(|f| {
        use std::io::Read as _;
        let mut b = Vec::new();
        let _ = f.take(64).read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    if !head.is_some_and(|h| h.contains("PRIVATE KEY-----")) {
        return Some((
            format!(
                "{} is not a private key (no `-----BEGIN ... PRIVATE KEY-----`)",
                path.display()
            ),
            "give the private half of the key pair, not the .pub file".into(),
        ));
    }
    None
}

/// The hosts of a `provider: hosts` spec, after checking what can be checked without connecting: every identity
/// file exists, is a private key, and is not readable by others.
pub fn from_spec(cluster: &Cluster, origin: &str) -> Result<HostList, ValidationError> {
    let mut errors = Vec::new();
    for (i, h) in cluster.hosts.iter().enumerate() {
        if let Some((message, hint)) = identity_problem(&h.identity_file) {
            errors.push(FieldError {
                path: format!("spec.hosts[{i}].identityFile"),
                message,
                hint,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ValidationError {
            origin: origin.into(),
            errors,
        });
    }
    let hosts: Vec<BootstrapHost> = cluster
        .hosts
        .iter()
        .map(|h| BootstrapHost {
            name: h.name.clone(),
            role: h.role,
            address: h.address.clone(),
            port: h.port,
            user: h.user.clone(),
            identity_file: Some(h.identity_file.clone()),
            host_key: match &h.host_key {
                Some(k) => ExpectedHostKey::PublicKey { key: k.clone() },
                None => ExpectedHostKey::KnownHosts,
            },
            jump: None,
            instance_id: None,
            zone: None,
            group: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        })
        .collect();
    let api_endpoint = hosts
        .iter()
        .find(|h| h.role == HostRole::Master)
        .map(|h| format!("{}:6443", h.address));
    Ok(HostList {
        cluster: cluster.name.clone(),
        api_endpoint,
        hosts,
    })
}

/// What the console output says about a host's keys: the fingerprints to expect, or why there are none. Public
/// keys printed next to fingerprints must match them, or the output is not trusted.
pub fn expected_from_console(keys: &HostKeys) -> ExpectedHostKey {
    if keys.fingerprints.is_empty() {
        return ExpectedHostKey::Unknown {
            reason: "the console output shows no SSH host key fingerprints (yet)".into(),
        };
    }
    let fingerprints: Vec<String> = keys.fingerprints.iter().map(|f| f.sha256.clone()).collect();
    for k in &keys.keys {
        let fp = public_key_fingerprint(&k.to_string());
        if !fp.as_ref().is_some_and(|fp| fingerprints.contains(fp)) {
            return ExpectedHostKey::Unknown {
                reason: format!(
                    "the console output's {} key does not match any fingerprint it printed ({})",
                    k.algorithm,
                    fp.unwrap_or_default()
                ),
            };
        }
    }
    ExpectedHostKey::Fingerprints { sha256: fingerprints }
}

async fn console_keys(aws: &Aws, instance: &str) -> anyhow::Result<HostKeys> {
    let out = aws
        .ec2()
        .get_console_output()
        .instance_id(instance)
        .latest(true)
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        // Not every endpoint knows `Latest`; the default output is what the instance printed at boot.
        Err(_) => aws
            .ec2()
            .get_console_output()
            .instance_id(instance)
            .send()
            .await
            .map_err(aws_err(format!("instance ({instance})"), "GetConsoleOutput"))?,
    };
    Ok(host_keys::parse_console(out.output().unwrap_or_default()))
}

/// One running instance of the cluster, as tags describe it.
struct Found {
    id: String,
    role: String,
    name: String,
    zone: Option<String>,
    group: Option<String>,
    private_ip: Option<String>,
    public_ip: Option<String>,
}

async fn running_instances(aws: &Aws, cluster: &str) -> anyhow::Result<(Vec<Found>, usize)> {
    // A fresh listing each round: instances change while they boot.
    let inv = Inventory::new(cluster);
    let mut found = Vec::new();
    let mut pending = 0;
    for i in inv.instances(aws).await? {
        let t = tags::ec2_tag_map(i.tags());
        let Some(role) = t.get(ROLE_TAG).cloned() else {
            continue;
        };
        let running = i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running");
        if !running {
            pending += 1;
            continue;
        }
        let id = i.instance_id().unwrap_or_default().to_string();
        let group = t.get(GROUP_TAG).cloned();
        let name = match (role.as_str(), &group) {
            ("worker", Some(g)) => format!("{g}-{id}"),
            _ => t
                .get(tags::RESOURCE)
                .and_then(|r| r.strip_prefix("instance/"))
                .unwrap_or(&id)
                .to_string(),
        };
        found.push(Found {
            id,
            role,
            name,
            zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
            group,
            private_ip: i.private_ip_address().map(str::to_string),
            public_ip: i.public_ip_address().map(str::to_string),
        });
    }
    found.sort_by(|a, b| (a.role.as_str(), &a.name).cmp(&(b.role.as_str(), &b.name)));
    Ok((found, pending))
}

/// The cluster's machines with their SSH host keys, read from each one's console. Waits up to `wait` for machines
/// still starting and for cloud-init to print the keys; with `require_keys`, a host whose key is still unknown
/// then is an error naming it (kforge never connects to a host it cannot verify).
pub async fn discover_ec2(
    aws: &Aws,
    cluster: &Cluster,
    wait: Duration,
    require_keys: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<HostList> {
    let started = Instant::now();
    // The keys read so far (a console shows them once cloud-init has run; read once each).
    let keys: std::sync::Mutex<BTreeMap<String, ExpectedHostKey>> = Default::default();
    let known = |id: &str| {
        keys.lock()
            .expect("never poisoned")
            .get(id)
            .is_some_and(|k| !matches!(k, ExpectedHostKey::Unknown { .. }))
    };
    // Past `wait` the machines found are the answer (whether that is enough is `require_keys`' question): the
    // probe says done then, so the wait itself never times out.
    let (found, pending) = Wait::new(
        format!("host keys of cluster {}", cluster.name),
        wait + Duration::from_secs(10),
    )
    .poll(Duration::from_secs(10))
    .until(|| async {
        let (found, pending) = running_instances(aws, &cluster.name).await?;
        let read = futures::future::try_join_all(found.iter().filter(|f| !known(&f.id)).map(|f| async move {
            Ok::<_, anyhow::Error>((f.id.clone(), expected_from_console(&console_keys(aws, &f.id).await?)))
        }))
        .await?;
        keys.lock().expect("never poisoned").extend(read);
        let missing = found.iter().filter(|f| !known(&f.id)).count();
        if (missing == 0 && pending == 0) || started.elapsed() >= wait {
            return Ok(Step::Done((found, pending)));
        }
        reporter.event(Event::Note(format!(
            "hosts: waiting for {missing} host key(s) in console output and {pending} machine(s) to start"
        )));
        Ok(not_yet(
            Duration::from_secs(10).min(wait.saturating_sub(started.elapsed())),
            "host keys",
        ))
    })
    .await?;
    let keys = keys.into_inner().expect("never poisoned");
    let user = cluster.ssh_user();
    let identity = cluster.ssh.identity_file.clone();
    let private = cluster.network.as_ref().map(|n| n.topology) == Some(Topology::Private);
    let address = |f: &Found| -> String {
        let public = if private { None } else { f.public_ip.clone() };
        public.or_else(|| f.private_ip.clone()).unwrap_or_default()
    };
    let host = |f: &Found, role: HostRole| BootstrapHost {
        name: f.name.clone(),
        role,
        address: address(f),
        port: 22,
        user: user.clone(),
        identity_file: identity.clone(),
        host_key: keys.get(&f.id).cloned().unwrap_or(ExpectedHostKey::Unknown {
            reason: "not read".into(),
        }),
        jump: None,
        instance_id: Some(f.id.clone()),
        zone: f.zone.clone(),
        group: f.group.clone(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
    };
    let jump = found.iter().find(|f| f.role == "bastion").map(|b| {
        let mut h = host(b, HostRole::Worker);
        h.address = b.public_ip.clone().or_else(|| b.private_ip.clone()).unwrap_or_default();
        Box::new(h)
    });
    let mut hosts = Vec::new();
    for f in found.iter().filter(|f| f.role != "bastion") {
        let role = if f.role == "master" {
            HostRole::Master
        } else {
            HostRole::Worker
        };
        let mut h = host(f, role);
        h.jump = jump.clone();
        if let Some(g) = cluster.node_groups.iter().find(|g| Some(&g.name) == f.group.as_ref()) {
            h.labels = g.labels.clone();
            h.taints = g.taints.iter().map(Taint::to_string).collect();
        }
        hosts.push(h);
    }
    let api_endpoint = crate::providers::api_lb::api_endpoint(aws, &cluster.name)
        .await?
        .or_else(|| {
            hosts
                .iter()
                .find(|h| h.role == HostRole::Master)
                .map(|h| format!("{}:6443", h.address))
        });
    if require_keys {
        let mut problems: Vec<String> = hosts
            .iter()
            .chain(jump.as_deref())
            .filter_map(|h| match &h.host_key {
                ExpectedHostKey::Unknown { reason } => Some(format!(
                    "  - host {} ({}): its SSH host key cannot be established: {reason}",
                    h.name,
                    h.instance_id.as_deref().unwrap_or_default()
                )),
                _ => None,
            })
            .collect();
        if pending > 0 {
            problems.push(format!("  - {pending} machine(s) are not running yet"));
        }
        if !problems.is_empty() {
            return Err(HostKeysTimedOut {
                cluster: cluster.name.clone(),
                waited: Duration::from_secs(started.elapsed().as_secs()),
                problems,
            }
            .into());
        }
    }
    Ok(HostList {
        cluster: cluster.name.clone(),
        api_endpoint,
        hosts,
    })
}

/// The wait for the machines' host keys (`--host-key-timeout`) ran out: a deadline, so exit 4 like the others.
#[derive(Debug, thiserror::Error)]
#[error(
    "cluster {cluster}: {} host(s) cannot be verified after waiting {}:\n{}\n  hint: kforge only connects to hosts whose key it knows; see `aws ec2 get-console-output --latest --instance-id ID` (the image's cloud-init must print its host keys), then re-run (or raise --host-key-timeout)",
    .problems.len(),
    humantime::format_duration(*.waited),
    .problems.join("\n")
)]
pub struct HostKeysTimedOut {
    pub cluster: String,
    pub waited: Duration,
    pub problems: Vec<String>,
}

/// Column names of [`HostList::rows`].
pub const TABLE_HEADER: [&str; 6] = ["NAME", "ROLE", "SSH", "IDENTITY", "HOST KEY", "VIA"];

impl HostList {
    /// One row per host under [`TABLE_HEADER`].
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.hosts
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.role_name().into(),
                    h.ssh_target(),
                    h.identity_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(ssh-agent)".into()),
                    h.host_key_shown(),
                    h.jump.as_ref().map(|j| j.address.clone()).unwrap_or_default(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::host_keys::{Fingerprint, PublicKey};

    #[test]
    fn console_keys_must_match_their_fingerprints() {
        let key = PublicKey {
            algorithm: "ssh-ed25519".into(),
            base64: "AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm".into(),
        };
        let good = Fingerprint {
            key_type: "ED25519".into(),
            bits: 256,
            sha256: "SHA256:QVSYP1nZPKQJHvsAQoPXmL4+TRPArXrch6Ff4dt29x0".into(),
        };
        let keys = HostKeys {
            fingerprints: vec![good.clone()],
            keys: vec![key.clone()],
        };
        assert_eq!(
            expected_from_console(&keys),
            ExpectedHostKey::Fingerprints {
                sha256: vec![good.sha256.clone()]
            }
        );
        let forged = HostKeys {
            fingerprints: vec![Fingerprint {
                sha256: "SHA256:AAAAP1nZPKQJHvsAQoPXmL4+TRPArXrch6Ff4dt29x0".into(),
                ..good
            }],
            keys: vec![key],
        };
        assert!(matches!(
            expected_from_console(&forged),
            ExpectedHostKey::Unknown { reason } if reason.contains("does not match")
        ));
        assert!(matches!(
            expected_from_console(&HostKeys::default()),
            ExpectedHostKey::Unknown { .. }
        ));
    }

    #[test]
    fn identity_files_are_checked_before_any_connection() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        std::fs::write(
            &key,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(identity_problem(&key), None);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(identity_problem(&key).unwrap().1.contains("chmod 600"));
        let public = dir.path().join("id.pub");
        std::fs::write(&public, "ssh-ed25519 AAAA me\n").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(identity_problem(&public).unwrap().0.contains("not a private key"));
        assert!(
            identity_problem(&dir.path().join("missing"))
                .unwrap()
                .0
                .contains("cannot read")
        );
    }
}
