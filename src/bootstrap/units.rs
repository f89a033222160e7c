//! The files each host of a self-built cluster gets besides the downloaded binaries: systemd units and
//! configuration rendered from `templates/`, kubeconfigs with kforge's client certificates, and the PKI files each
//! component reads. Pure functions of the cluster's facts, so a re-run renders the same bytes and uploads nothing.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::pki::{CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA, Member, Pki};
use super::ssh::FileSpec;

pub const CONTAINERD_UNIT: &str = include_str!("../../templates/containerd.service");
pub const CONTAINERD_CONFIG: &str = include_str!("../../templates/containerd-config.toml");
pub const APISERVER_UNIT: &str = include_str!("../../templates/kube-apiserver.service");
pub const CONTROLLER_MANAGER_UNIT: &str = include_str!("../../templates/kube-controller-manager.service");
pub const SCHEDULER_UNIT: &str = include_str!("../../templates/kube-scheduler.service");
pub const KUBELET_UNIT: &str = include_str!("../../templates/kubelet.service");
pub const KUBE_PROXY_UNIT: &str = include_str!("../../templates/kube-proxy.service");
pub const KUBELET_CONFIG: &str = include_str!("../../templates/kubelet-config.yaml");
pub const KUBE_PROXY_CONFIG: &str = include_str!("../../templates/kube-proxy-config.yaml");
pub const AUDIT_POLICY: &str = include_str!("../../templates/audit-policy.yaml");

pub const UNIT_DIR: &str = "/etc/systemd/system";
pub const PKI_DIR: &str = "/etc/kforge/pki";
/// containerd's socket (not the distribution's /run/containerd, which may belong to another containerd).
pub const CONTAINERD_SOCKET: &str = "/run/kforge-containerd/containerd.sock";

/// What the templates need to know about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterFacts {
    pub cluster: String,
    pub masters: Vec<Member>,
    /// `https://HOST:PORT` nodes and kubectl use (load balancer, or the first master).
    pub api_url: String,
    pub service_cidr: String,
    pub pod_cidr: String,
    pub cluster_domain: String,
    pub cluster_dns: String,
}

/// Fills `{{key}}` placeholders; panics on one left unfilled (a template bug every test would catch).
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!out.contains("{{"), "unfilled placeholder in template:\n{out}");
    out
}

fn file(path: impl Into<String>, bytes: impl Into<Vec<u8>>, mode: i32) -> FileSpec {
    FileSpec {
        path: path.into(),
        bytes: bytes.into(),
        mode,
    }
}

fn cert(pki: &Pki, name: &str) -> (String, String) {
    let c = pki.certs.get(name).unwrap_or_else(|| panic!("the PKI has {name}"));
    (c.cert_pem.clone(), c.key_pem.clone())
}

/// A kubeconfig that authenticates with a client certificate.
pub fn kubeconfig(cluster: &str, server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
         contexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {user}@{cluster}\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

fn common(f: &ClusterFacts, name: &str, address: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cluster", f.cluster.clone()),
        ("name", name.to_string()),
        ("address", address.to_string()),
        ("service_cidr", f.service_cidr.clone()),
        ("pod_cidr", f.pod_cidr.clone()),
        ("cluster_domain", f.cluster_domain.clone()),
        ("cluster_dns", f.cluster_dns.clone()),
    ]
}

fn vars<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// containerd's configuration and unit (every host).
pub fn runtime_files(f: &ClusterFacts) -> Vec<FileSpec> {
    let v = [("cluster", f.cluster.clone())];
    vec![
        file(
            "/etc/kforge/containerd/config.toml",
            render(CONTAINERD_CONFIG, &vars(&v)),
            0o644,
        ),
        file(
            format!("{UNIT_DIR}/kforge-containerd.service"),
            render(CONTAINERD_UNIT, &vars(&v)),
            0o644,
        ),
    ]
}

/// The control plane of one master: PKI files, kubeconfigs, audit policy and the three units.
pub fn control_plane_files(f: &ClusterFacts, pki: &Pki, master: &Member) -> Vec<FileSpec> {
    let mut v = common(f, &master.name, &master.address.to_string());
    let etcd: Vec<String> = f
        .masters
        .iter()
        .map(|m| format!("https://{}:2379", m.address))
        .collect();
    v.push(("etcd_servers", etcd.join(",")));
    let vv = vars(&v);
    let mut out = Vec::new();
    for ca in [CLUSTER_CA, FRONT_PROXY_CA] {
        let (c, k) = cert(pki, ca);
        out.push(file(format!("{PKI_DIR}/{ca}.crt"), c, 0o644));
        // The controller manager signs with the cluster CA; the front-proxy CA key stays in the state store.
        if ca == CLUSTER_CA {
            out.push(file(format!("{PKI_DIR}/{ca}.key"), k, 0o600));
        }
    }
    let (etcd_ca, _) = cert(pki, ETCD_CA);
    out.push(file(format!("{PKI_DIR}/{ETCD_CA}.crt"), etcd_ca, 0o644));
    for leaf in [
        "apiserver",
        "apiserver-kubelet-client",
        "apiserver-etcd-client",
        "front-proxy-client",
    ] {
        let (c, k) = cert(pki, leaf);
        out.push(file(format!("{PKI_DIR}/{leaf}.crt"), c, 0o644));
        out.push(file(format!("{PKI_DIR}/{leaf}.key"), k, 0o600));
    }
    out.push(file(
        format!("{PKI_DIR}/sa.key"),
        pki.service_account_key.clone(),
        0o600,
    ));
    out.push(file(
        format!("{PKI_DIR}/sa.pub"),
        pki.service_account_pub.clone(),
        0o644,
    ));
    let (ca, _) = cert(pki, CLUSTER_CA);
    let local = "https://127.0.0.1:6443";
    for (leaf, user, path) in [
        (
            "controller-manager",
            "system:kube-controller-manager",
            "/etc/kforge/controller-manager.kubeconfig",
        ),
        ("scheduler", "system:kube-scheduler", "/etc/kforge/scheduler.kubeconfig"),
        ("admin", "kubernetes-admin", "/etc/kforge/admin.kubeconfig"),
    ] {
        let (c, k) = cert(pki, leaf);
        out.push(file(path, kubeconfig(&f.cluster, local, &ca, user, &c, &k), 0o600));
    }
    out.push(file("/etc/kforge/audit-policy.yaml", render(AUDIT_POLICY, &vv), 0o644));
    for (unit, template) in [
        ("kforge-kube-apiserver", APISERVER_UNIT),
        ("kforge-kube-controller-manager", CONTROLLER_MANAGER_UNIT),
        ("kforge-kube-scheduler", SCHEDULER_UNIT),
    ] {
        out.push(file(format!("{UNIT_DIR}/{unit}.service"), render(template, &vv), 0o644));
    }
    out
}

/// kubelet and kube-proxy of one worker.
pub fn node_files(
    f: &ClusterFacts,
    pki: &Pki,
    name: &str,
    address: &str,
    labels: &BTreeMap<String, String>,
    taints: &[String],
) -> Vec<FileSpec> {
    let mut v = common(f, name, address);
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.push(("labels", labels.join(",")));
    v.push(("register_with_taints", register_with_taints(taints)));
    let vv = vars(&v);
    let (ca, _) = cert(pki, CLUSTER_CA);
    let (kc, kk) = cert(pki, &format!("kubelet-{name}"));
    let (pc, pk) = cert(pki, "kube-proxy");
    vec![
        file(format!("{PKI_DIR}/{CLUSTER_CA}.crt"), ca.clone(), 0o644),
        file(
            "/etc/kforge/kubelet.kubeconfig",
            kubeconfig(&f.cluster, &f.api_url, &ca, &format!("system:node:{name}"), &kc, &kk),
            0o600,
        ),
        file("/etc/kforge/kubelet-config.yaml", render(KUBELET_CONFIG, &vv), 0o644),
        file(
            format!("{UNIT_DIR}/kforge-kubelet.service"),
            render(KUBELET_UNIT, &vv),
            0o644,
        ),
        file(
            "/etc/kforge/kube-proxy.kubeconfig",
            kubeconfig(&f.cluster, &f.api_url, &ca, "system:kube-proxy", &pc, &pk),
            0o600,
        ),
        file(
            "/etc/kforge/kube-proxy-config.yaml",
            render(KUBE_PROXY_CONFIG, &vv),
            0o644,
        ),
        file(
            format!("{UNIT_DIR}/kforge-kube-proxy.service"),
            render(KUBE_PROXY_UNIT, &vv),
            0o644,
        ),
    ]
}

/// The kubelet configuration's `registerWithTaints` (a flow sequence: JSON is YAML) for taints written as
/// `key[=value]:Effect` (validated by the model).
pub fn register_with_taints(taints: &[String]) -> String {
    let list: Vec<serde_json::Value> = taints
        .iter()
        .map(|t| {
            let (kv, effect) = t.rsplit_once(':').unwrap_or((t.as_str(), "NoSchedule"));
            let mut taint = serde_json::Map::new();
            match kv.split_once('=') {
                Some((k, v)) => {
                    taint.insert("key".into(), k.into());
                    taint.insert("value".into(), v.into());
                }
                None => {
                    taint.insert("key".into(), kv.into());
                }
            }
            taint.insert("effect".into(), effect.into());
            serde_json::Value::Object(taint)
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The units that read `path` (every unit of the host when kforge does not know the file: restarting too much is
/// safe, too little is not). Used so that a change restarts only what reads the changed file: an edit of the API
/// server's flags must not restart the controller manager and scheduler and force a leader election.
fn readers(path: &str) -> Option<&'static [&'static str]> {
    const APISERVER: &str = "kforge-kube-apiserver";
    const CONTROLLER_MANAGER: &str = "kforge-kube-controller-manager";
    const SCHEDULER: &str = "kforge-kube-scheduler";
    const KUBELET: &str = "kforge-kubelet";
    const KUBE_PROXY: &str = "kforge-kube-proxy";
    let file = path.rsplit('/').next().unwrap_or(path);
    Some(match path {
        p if p.starts_with(&format!("{PKI_DIR}/")) => match file {
            // The cluster CA: client CA of the API server and the kubelet, signer of the controller manager.
            "ca.crt" => &[APISERVER, CONTROLLER_MANAGER, KUBELET],
            "ca.key" => &[CONTROLLER_MANAGER],
            "sa.key" => &[APISERVER, CONTROLLER_MANAGER],
            "sa.pub" => &[APISERVER],
            "front-proxy-ca.crt" => &[APISERVER, CONTROLLER_MANAGER],
            _ => &[APISERVER],
        },
        "/etc/kforge/controller-manager.kubeconfig" => &[CONTROLLER_MANAGER],
        "/etc/kforge/scheduler.kubeconfig" => &[SCHEDULER],
        "/etc/kforge/admin.kubeconfig" => &[],
        "/etc/kforge/audit-policy.yaml" => &[APISERVER],
        "/etc/kforge/kubelet.kubeconfig" | "/etc/kforge/kubelet-config.yaml" => &[KUBELET],
        "/etc/kforge/kube-proxy.kubeconfig" | "/etc/kforge/kube-proxy-config.yaml" => &[KUBE_PROXY],
        _ => return None,
    })
}

/// The units among `files` to restart after `uploaded` changed: a unit file's own unit, and each unit that reads
/// a changed file.
pub fn restarts_for(files: &[FileSpec], uploaded: &[String]) -> Vec<String> {
    let all = units_in(files);
    let mut out: Vec<String> = Vec::new();
    for path in uploaded {
        let wanted: Vec<String> = match path.strip_prefix(&format!("{UNIT_DIR}/")) {
            Some(unit) => vec![unit.trim_end_matches(".service").to_string()],
            None => match readers(path) {
                Some(units) => units.iter().map(|u| u.to_string()).collect(),
                None => all.clone(),
            },
        };
        for u in wanted {
            if all.contains(&u) && !out.contains(&u) {
                out.push(u);
            }
        }
    }
    // In the order the files list them (the API server before what talks to it).
    out.sort_by_key(|u| all.iter().position(|a| a == u));
    out
}

/// The systemd units among `files` (by unit name).
pub fn units_in(files: &[FileSpec]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.path.strip_prefix(&format!("{UNIT_DIR}/")))
        .map(|u| u.trim_end_matches(".service").to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> FileSpec {
        file(path, Vec::new(), 0o644)
    }

    fn control_plane() -> Vec<FileSpec> {
        [
            "/etc/kforge/pki/ca.crt",
            "/etc/kforge/pki/ca.key",
            "/etc/kforge/pki/apiserver.crt",
            "/etc/kforge/controller-manager.kubeconfig",
            "/etc/kforge/scheduler.kubeconfig",
            "/etc/kforge/admin.kubeconfig",
            "/etc/kforge/audit-policy.yaml",
            "/etc/systemd/system/kforge-kube-apiserver.service",
            "/etc/systemd/system/kforge-kube-controller-manager.service",
            "/etc/systemd/system/kforge-kube-scheduler.service",
        ]
        .into_iter()
        .map(spec)
        .collect()
    }

    #[test]
    fn a_change_restarts_only_the_units_that_read_it() {
        let files = control_plane();
        let restarts =
            |changed: &[&str]| restarts_for(&files, &changed.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        assert_eq!(
            restarts(&["/etc/systemd/system/kforge-kube-apiserver.service"]),
            ["kforge-kube-apiserver"]
        );
        assert_eq!(restarts(&["/etc/kforge/audit-policy.yaml"]), ["kforge-kube-apiserver"]);
        assert_eq!(
            restarts(&["/etc/kforge/scheduler.kubeconfig"]),
            ["kforge-kube-scheduler"]
        );
        // The CA is read by the API server and the controller manager (the kubelet is not on this host).
        assert_eq!(
            restarts(&["/etc/kforge/pki/ca.crt"]),
            ["kforge-kube-apiserver", "kforge-kube-controller-manager"]
        );
        assert!(restarts(&["/etc/kforge/admin.kubeconfig"]).is_empty());
        assert!(restarts(&[]).is_empty());
        // A file kforge does not know restarts everything on the host.
        assert_eq!(restarts(&["/etc/kforge/something-new"]).len(), 3);
        let node: Vec<FileSpec> = [
            "/etc/kforge/pki/ca.crt",
            "/etc/kforge/kubelet-config.yaml",
            "/etc/kforge/kube-proxy-config.yaml",
            "/etc/systemd/system/kforge-kubelet.service",
            "/etc/systemd/system/kforge-kube-proxy.service",
        ]
        .into_iter()
        .map(spec)
        .collect();
        assert_eq!(
            restarts_for(&node, &["/etc/kforge/kube-proxy-config.yaml".to_string()]),
            ["kforge-kube-proxy"]
        );
        assert_eq!(
            restarts_for(&node, &["/etc/kforge/pki/ca.crt".to_string()]),
            ["kforge-kubelet"]
        );
    }

    #[test]
    fn taints_go_into_the_kubelet_configuration() {
        assert_eq!(register_with_taints(&[]), "[]");
        let rendered = register_with_taints(&["gpu=true:NoSchedule".into(), "dedicated:NoExecute".into()]);
        let parsed: serde_json::Value = serde_norway::from_str(&rendered).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"key": "gpu", "value": "true", "effect": "NoSchedule"},
                {"key": "dedicated", "effect": "NoExecute"}
            ])
        );
        let config = render(
            KUBELET_CONFIG,
            &[
                ("name", "w1"),
                ("cluster", "c"),
                ("cluster_domain", "cluster.local"),
                ("cluster_dns", "10.96.0.10"),
                ("register_with_taints", &rendered),
            ],
        );
        let doc: serde_json::Value = serde_norway::from_str(&config).unwrap();
        assert_eq!(doc["registerWithTaints"][0]["key"], "gpu");
        assert!(!KUBELET_UNIT.contains("register-with-taints"));
        let proxy: serde_json::Value = serde_norway::from_str(&render(
            KUBE_PROXY_CONFIG,
            &[("name", "w1"), ("cluster", "c"), ("pod_cidr", "10.244.0.0/16")],
        ))
        .unwrap();
        assert_eq!(proxy["nodePortAddresses"], serde_json::json!(["primary"]));
    }
}
