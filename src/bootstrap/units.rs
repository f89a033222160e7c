//! The files each host of a self-built cluster gets besides the downloaded binaries: systemd units and
//! configuration rendered from `templates/`, kubeconfigs with kforge's client certificates, and the PKI files each
//! component reads. Pure functions of the cluster's facts, so a re-run renders the same bytes and uploads nothing.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::pki::{CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA, Member, Pki};
use super::ssh::FileSpec;

pub const CONTAINERD_UNIT: &str = include_str!("../../templates/containerd.service");
/// containerd 1.x's configuration (format version 2).
pub const CONTAINERD_CONFIG: &str = include_str!("../../templates/containerd-config.toml");
/// containerd 2.x's configuration (format version 3: the CRI plugin split into images and runtime).
pub const CONTAINERD2_CONFIG: &str = include_str!("../../templates/containerd2-config.toml");
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
    /// The major version of the containerd the cluster installs (its configuration format follows it).
    pub containerd_major: u32,
    /// The pod sandbox image (the manifest's `pause`, from `spec.assets.imageRegistry` when set).
    pub sandbox_image: String,
    /// Provider ec2: kubelets run with `--cloud-provider=external` and their instance's provider ID, and the AWS
    /// cloud controller manager initialises their Nodes.
    pub external_cloud: bool,
    /// The kubelet refuses to run on a cgroup v1 host (`failCgroupV1`).
    pub fail_cgroup_v1: bool,
    /// The kubelet's `evictionHard`, complete (empty: the kubelet's defaults).
    pub eviction_hard: BTreeMap<String, String>,
    /// The kubelet's image garbage collection thresholds (high, low) in percent (none: its defaults).
    pub image_gc: Option<(u32, u32)>,
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
    let v = [
        ("cluster", f.cluster.clone()),
        ("sandbox_image", f.sandbox_image.clone()),
    ];
    let config = if f.containerd_major >= 2 {
        CONTAINERD2_CONFIG
    } else {
        CONTAINERD_CONFIG
    };
    vec![
        file("/etc/kforge/containerd/config.toml", render(config, &vars(&v)), 0o644),
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

/// The Node a host registers as: its name, address, labels and taints, and whether it is a master.
pub struct NodeIdentity<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [String],
    pub master: bool,
    /// `aws:///ZONE/INSTANCE-ID` of an ec2 instance (what the cloud controller finds the instance by).
    pub provider_id: Option<String>,
}

/// The provider ID of an EC2 instance, as the AWS cloud provider writes and reads it.
pub fn aws_provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The API server a master's kubelet and kube-proxy talk to: its own (the apiserver certificate names
/// 127.0.0.1), so a master's Node does not depend on the load balancer or on another master.
const LOCAL_API: &str = "https://127.0.0.1:6443";

/// kubelet and kube-proxy of one host. A master registers with the control-plane `NoSchedule` taint (its label
/// is set through the API afterwards: the NodeRestriction admission plugin forbids a kubelet to label itself
/// `node-role.kubernetes.io/*`).
pub fn node_files(f: &ClusterFacts, pki: &Pki, node: &NodeIdentity<'_>) -> Vec<FileSpec> {
    let name = node.name;
    let mut v = common(f, name, node.address);
    let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.push(("labels", labels.join(",")));
    let mut taints = node.taints.to_vec();
    if node.master {
        taints.push(format!("{}:NoSchedule", super::health::CONTROL_PLANE_ROLE));
    }
    v.push(("register_with_taints", register_with_taints(&taints)));
    // The cloud's flag on the command line (it has no configuration field); the provider ID in the configuration.
    let (cloud_flags, provider_id) = match (&node.provider_id, f.external_cloud) {
        (Some(id), true) => (
            " \\\n  --cloud-provider=external".to_string(),
            format!("providerID: {id}\n"),
        ),
        (None, true) => (" \\\n  --cloud-provider=external".to_string(), String::new()),
        (_, false) => (String::new(), String::new()),
    };
    v.push(("cloud_flags", cloud_flags));
    v.push(("fail_cgroup_v1", f.fail_cgroup_v1.to_string()));
    v.push(("provider_id", provider_id));
    v.push(("kubelet_thresholds", kubelet_thresholds(f)));
    let vv = vars(&v);
    let api = if node.master { LOCAL_API } else { f.api_url.as_str() };
    let (ca, _) = cert(pki, CLUSTER_CA);
    let (kc, kk) = cert(pki, &format!("kubelet-{name}"));
    let (sc, sk) = cert(pki, &format!("kubelet-serving-{name}"));
    let (pc, pk) = cert(pki, "kube-proxy");
    vec![
        file(format!("{PKI_DIR}/{CLUSTER_CA}.crt"), ca.clone(), 0o644),
        file(format!("{PKI_DIR}/kubelet-serving.crt"), sc, 0o644),
        file(format!("{PKI_DIR}/kubelet-serving.key"), sk, 0o600),
        file(
            "/etc/kforge/kubelet.kubeconfig",
            kubeconfig(&f.cluster, api, &ca, &format!("system:node:{name}"), &kc, &kk),
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
            kubeconfig(&f.cluster, api, &ca, "system:kube-proxy", &pc, &pk),
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

/// The kubelet configuration's eviction and image garbage collection thresholds, each line ending in a newline;
/// empty when the spec sets none (the kubelet's defaults hold).
fn kubelet_thresholds(f: &ClusterFacts) -> String {
    let mut out = String::new();
    if !f.eviction_hard.is_empty() {
        out.push_str("evictionHard:\n");
        for (signal, threshold) in &f.eviction_hard {
            // Quoted: a bare `10%` is YAML's, but `100Mi` and `5%` read alike only as strings.
            out.push_str(&format!(
                "  {signal}: {}\n",
                serde_json::Value::from(threshold.as_str())
            ));
        }
    }
    if let Some((high, low)) = f.image_gc {
        out.push_str(&format!(
            "imageGCHighThresholdPercent: {high}\nimageGCLowThresholdPercent: {low}\n"
        ));
    }
    out
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
            "kubelet-serving.crt" | "kubelet-serving.key" => &[KUBELET],
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

    fn facts(external_cloud: bool, containerd_major: u32) -> ClusterFacts {
        ClusterFacts {
            cluster: "c".into(),
            masters: vec![Member {
                name: "m1".into(),
                address: "10.0.0.11".parse().unwrap(),
            }],
            api_url: "https://api.c.example:6443".into(),
            service_cidr: "10.96.0.0/12".into(),
            pod_cidr: "10.244.0.0/16".into(),
            cluster_domain: "cluster.local".into(),
            cluster_dns: "10.96.0.10".into(),
            containerd_major,
            sandbox_image: "mirror:5000/pause:3.10".into(),
            external_cloud,
            fail_cgroup_v1: false,
            eviction_hard: BTreeMap::new(),
            image_gc: None,
        }
    }

    fn pki(dir: &std::path::Path) -> Pki {
        let m1 = Member {
            name: "m1".into(),
            address: "10.0.0.11".parse().unwrap(),
        };
        let w1 = Member {
            name: "w1".into(),
            address: "10.0.0.21".parse().unwrap(),
        };
        let request = super::super::pki::PkiRequest {
            cluster: "c".into(),
            masters: vec![m1.clone()],
            nodes: vec![m1, w1],
            api_endpoint: None,
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        };
        Pki::ensure(dir, &request).unwrap().0
    }

    fn text_of<'a>(files: &'a [FileSpec], path: &str) -> &'a str {
        let f = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path}"));
        std::str::from_utf8(&f.bytes).unwrap()
    }

    #[test]
    fn a_master_is_a_tainted_node_of_its_own_api_server_and_a_worker_of_the_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let f = facts(false, 2);
        let labels = BTreeMap::new();
        let node = |name, master| NodeIdentity {
            name,
            address: if master { "10.0.0.11" } else { "10.0.0.21" },
            labels: &labels,
            taints: &[],
            master,
            provider_id: None,
        };
        let master = node_files(&f, &pki, &node("m1", true));
        let config: serde_json::Value =
            serde_norway::from_str(text_of(&master, "/etc/kforge/kubelet-config.yaml")).unwrap();
        assert_eq!(
            config["registerWithTaints"],
            serde_json::json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
        );
        assert_eq!(config["tlsCertFile"], "/etc/kforge/pki/kubelet-serving.crt");
        assert_eq!(config["failCgroupV1"], false);
        assert!(config.get("providerID").is_none());
        assert!(text_of(&master, "/etc/kforge/kubelet.kubeconfig").contains("server: https://127.0.0.1:6443"));
        assert!(text_of(&master, "/etc/kforge/kube-proxy.kubeconfig").contains("server: https://127.0.0.1:6443"));
        assert!(!text_of(&master, "/etc/systemd/system/kforge-kubelet.service").contains("--cloud-provider"));
        // The serving certificate names the node and its address (what the API server and metrics-server dial).
        let serving = text_of(&master, "/etc/kforge/pki/kubelet-serving.crt");
        let parsed = x509_parser::pem::parse_x509_pem(serving.as_bytes()).unwrap().1;
        let cert = parsed.parse_x509().unwrap();
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value.general_names
        );
        assert!(sans.contains("\"m1\"") && sans.contains("[10, 0, 0, 11]"), "{sans}");
        assert_eq!(
            master
                .iter()
                .find(|f| f.path.ends_with("kubelet-serving.key"))
                .unwrap()
                .mode,
            0o600
        );

        let worker = node_files(&f, &pki, &node("w1", false));
        let config: serde_json::Value =
            serde_norway::from_str(text_of(&worker, "/etc/kforge/kubelet-config.yaml")).unwrap();
        assert_eq!(config["registerWithTaints"], serde_json::json!([]));
        assert!(text_of(&worker, "/etc/kforge/kubelet.kubeconfig").contains("server: https://api.c.example:6443"));
    }

    /// Worker w1 at 10.0.0.21 with `labels` and no taint.
    fn untainted_worker(labels: &BTreeMap<String, String>, provider_id: Option<String>) -> NodeIdentity<'_> {
        NodeIdentity {
            name: "w1",
            address: "10.0.0.21",
            labels,
            taints: &[],
            master: false,
            provider_id,
        }
    }

    #[test]
    fn an_ec2_kubelet_is_external_to_the_cloud_with_its_instances_provider_id() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let labels = BTreeMap::new();
        let id = aws_provider_id("us-east-1a", "i-0123456789abcdef0");
        assert_eq!(id, "aws:///us-east-1a/i-0123456789abcdef0");
        let files = node_files(&facts(true, 2), &pki, &untainted_worker(&labels, Some(id.clone())));
        let unit = text_of(&files, "/etc/systemd/system/kforge-kubelet.service");
        assert!(
            unit.contains("  --node-labels= \\\n  --cloud-provider=external\n"),
            "{unit}"
        );
        let config: serde_json::Value =
            serde_norway::from_str(text_of(&files, "/etc/kforge/kubelet-config.yaml")).unwrap();
        assert_eq!(config["providerID"], id.as_str());
    }

    #[test]
    fn eviction_and_image_gc_thresholds_reach_the_kubelet_configuration_only_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let labels = BTreeMap::new();
        let config_of = |f: &ClusterFacts| -> serde_json::Value {
            let files = node_files(f, &pki, &untainted_worker(&labels, None));
            serde_norway::from_str(text_of(&files, "/etc/kforge/kubelet-config.yaml")).unwrap()
        };
        let plain = config_of(&facts(false, 2));
        assert!(plain.get("evictionHard").is_none() && plain.get("imageGCHighThresholdPercent").is_none());
        let mut tuned = facts(false, 2);
        tuned.eviction_hard = [("memory.available", "500Mi"), ("nodefs.available", "5%")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        tuned.image_gc = Some((100, 99));
        let config = config_of(&tuned);
        assert_eq!(
            config["evictionHard"],
            serde_json::json!({"memory.available": "500Mi", "nodefs.available": "5%"})
        );
        assert_eq!(config["imageGCHighThresholdPercent"], 100);
        assert_eq!(config["imageGCLowThresholdPercent"], 99);
    }

    #[test]
    fn containerd_gets_the_configuration_format_of_its_major_version() {
        let one = runtime_files(&facts(false, 1));
        let one = text_of(&one, "/etc/kforge/containerd/config.toml");
        assert!(one.contains("version = 2") && one.contains("sandbox_image = \"mirror:5000/pause:3.10\""));
        let two = runtime_files(&facts(false, 2));
        let two = text_of(&two, "/etc/kforge/containerd/config.toml");
        assert!(
            two.contains("version = 3") && two.contains("sandbox = \"mirror:5000/pause:3.10\""),
            "{two}"
        );
        assert!(
            !two.contains("io.containerd.grpc.v1.cri"),
            "2.x split the CRI plugin: {two}"
        );
        for text in [one, two] {
            assert!(
                text.contains(&format!("[grpc]\n  address = \"{CONTAINERD_SOCKET}\"")),
                "{text}"
            );
            assert!(!text.contains("{{"), "{text}");
        }
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
                ("provider_id", ""),
                ("kubelet_thresholds", ""),
                ("fail_cgroup_v1", "false"),
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

    /// Every file rendered from `templates/` as a host gets it (certificates and kubeconfigs left out: their keys
    /// are new each run), one snapshot each: a template edit shows up as a reviewed diff of what hosts receive.
    #[test]
    fn rendered_templates_match_their_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let labels = BTreeMap::from([("kforge.dev/node-group".to_string(), "workers".to_string())]);
        let m1 = Member {
            name: "m1".into(),
            address: "10.0.0.11".parse().unwrap(),
        };
        let taints = ["gpu=true:NoSchedule".to_string()];
        let sets: [(&str, Vec<FileSpec>); 6] = [
            ("containerd1", runtime_files(&facts(false, 1))),
            ("containerd2", runtime_files(&facts(false, 2))),
            ("master", control_plane_files(&facts(true, 2), &pki, &m1)),
            (
                "ec2-master-node",
                node_files(
                    &facts(true, 2),
                    &pki,
                    &NodeIdentity {
                        name: "m1",
                        address: "10.0.0.11",
                        labels: &BTreeMap::new(),
                        taints: &[],
                        master: true,
                        provider_id: Some(aws_provider_id("eu-west-1a", "i-0123456789abcdef0")),
                    },
                ),
            ),
            (
                "hosts-worker-node",
                node_files(
                    &facts(false, 2),
                    &pki,
                    &NodeIdentity {
                        name: "w1",
                        address: "10.0.0.21",
                        labels: &labels,
                        taints: &taints,
                        master: false,
                        provider_id: None,
                    },
                ),
            ),
            (
                "etcd",
                super::super::etcd::member_files(&pki, "c", &m1, "/opt/kforge/bin/etcd"),
            ),
        ];
        let mut seen = 0;
        for (set, files) in &sets {
            for f in files {
                if f.path.starts_with(PKI_DIR) || f.path.ends_with(".kubeconfig") {
                    continue;
                }
                let name = format!("{set}{}", f.path.replace('/', "_"));
                insta::assert_snapshot!(name, std::str::from_utf8(&f.bytes).unwrap());
                seen += 1;
            }
        }
        assert!(seen >= 14, "every unit and configuration file: {seen}");
        let members = [("m1".to_string(), "https://10.0.0.11:2380".to_string())];
        insta::assert_snapshot!("etcd-initial-env-new", super::super::etcd::initial_env(&members, false));
        // The addons as applied: every object of every addon, with the images a manifest would name.
        let images: BTreeMap<String, String> = super::super::addons::TEMPLATES
            .iter()
            .flat_map(|(_, t)| t.match_indices("{{image:").map(move |(i, _)| &t[i + 8..]))
            .filter_map(|rest| rest.split_once("}}").map(|(n, _)| n.to_string()))
            .map(|n| (n.clone(), format!("registry.example/{n}:v1")))
            .collect();
        let names: Vec<String> = super::super::addons::TEMPLATES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let objects = super::super::addons::objects(&facts(true, 2), &images, &names).unwrap();
        for (addon, _) in super::super::addons::TEMPLATES {
            let docs: Vec<&serde_json::Value> = objects.iter().filter(|o| o.addon == addon).map(|o| &o.body).collect();
            assert!(!docs.is_empty(), "{addon}");
            insta::assert_snapshot!(format!("addon-{addon}"), serde_norway::to_string(&docs).unwrap());
        }
    }
}
