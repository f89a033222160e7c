//! The addons of a self-built cluster, applied through the API server with server-side apply once the control
//! plane is ready: flannel (pod network) and CoreDNS, metrics-server, and on provider ec2 the AWS cloud controller
//! manager and the EBS CSI driver with its default `gp3` StorageClass. kforge speaks to the API itself (TLS pinned to the
//! cluster CA, the admin client certificate), so the machine running kforge needs no kubectl. Server-side apply
//! is idempotent by design; an object counts as changed only when its resourceVersion moved, so a re-run
//! reports zero changes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

pub use super::api::ApiClient;
use super::units::{self, ClusterFacts};
use crate::bootstrap::StepError;
use crate::engine::Step;
use crate::engine::wait::Wait;

pub const FLANNEL: &str = include_str!("../../templates/addons/flannel.yaml");
pub const COREDNS: &str = include_str!("../../templates/addons/coredns.yaml");
pub const METRICS_SERVER: &str = include_str!("../../templates/addons/metrics-server.yaml");
pub const AWS_CLOUD_CONTROLLER_MANAGER: &str = include_str!("../../templates/addons/aws-cloud-controller-manager.yaml");
pub const AWS_EBS_CSI_DRIVER: &str = include_str!("../../templates/addons/aws-ebs-csi-driver.yaml");
/// The cloud integration of provider ec2 (its kubelets wait for it): named where the spec's addons are.
pub use crate::model::CLOUD_CONTROLLER;
/// Every addon the bootstrap applies, in order, with its template (`model::SELF_BUILT_ADDONS` names those a spec
/// may list; the cloud controller comes with provider ec2).
pub const TEMPLATES: [(&str, &str); 5] = [
    (CLOUD_CONTROLLER, AWS_CLOUD_CONTROLLER_MANAGER),
    ("flannel", FLANNEL),
    ("coredns", COREDNS),
    ("metrics-server", METRICS_SERVER),
    ("aws-ebs-csi-driver", AWS_EBS_CSI_DRIVER),
];
/// The field manager kforge applies as (what `kubectl get -o yaml --show-managed-fields` names).
pub const FIELD_MANAGER: &str = "kforge";

/// One API object of an addon, with the URL path it lives at.
#[derive(Debug, Clone)]
pub struct Object {
    pub addon: &'static str,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub path: String,
    pub body: serde_json::Value,
}

impl Object {
    /// `Kind namespace/name` (or `Kind name` for cluster-scoped objects), as errors name it.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// The REST resource of the kinds the addons use, and whether it lives in a namespace.
fn resource_of(kind: &str) -> Option<(&'static str, bool)> {
    Some(match kind {
        "Namespace" => ("namespaces", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "ConfigMap" => ("configmaps", true),
        "Service" => ("services", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "DaemonSet" => ("daemonsets", true),
        "Deployment" => ("deployments", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "StorageClass" => ("storageclasses", false),
        "CSIDriver" => ("csidrivers", false),
        "APIService" => ("apiservices", false),
        _ => return None,
    })
}

fn object_of(addon: &'static str, body: serde_json::Value) -> Result<Object, String> {
    let field = |path: &[&str]| {
        let mut v = &body;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_string)
    };
    let api_version = field(&["apiVersion"]).ok_or_else(|| format!("{addon}: an object has no apiVersion"))?;
    let kind = field(&["kind"]).ok_or_else(|| format!("{addon}: an object has no kind"))?;
    let name = field(&["metadata", "name"]).ok_or_else(|| format!("{addon}: a {kind} has no name"))?;
    let namespace = field(&["metadata", "namespace"]);
    let (plural, namespaced) =
        resource_of(&kind).ok_or_else(|| format!("{addon}: kforge does not know the API resource of kind {kind}"))?;
    if namespaced != namespace.is_some() {
        return Err(format!(
            "{addon}: {kind} {name} {} a namespace",
            if namespaced { "needs" } else { "cannot have" }
        ));
    }
    let prefix = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let path = match &namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    };
    Ok(Object {
        addon,
        kind,
        namespace,
        name,
        path,
        body,
    })
}

/// The addons' objects for this cluster, in the order they are applied (namespaces before what they hold).
/// `images` are the manifest's, already pointed at `spec.assets.imageRegistry` when one is set.
pub fn objects(
    facts: &ClusterFacts,
    images: &BTreeMap<String, String>,
    names: &[String],
) -> Result<Vec<Object>, String> {
    let mut vars: Vec<(String, String)> = vec![
        ("cluster".into(), facts.cluster.clone()),
        ("pod_cidr".into(), facts.pod_cidr.clone()),
        ("cluster_dns".into(), facts.cluster_dns.clone()),
        ("cluster_domain".into(), facts.cluster_domain.clone()),
        // Two controllers where there are masters for both: each runs on the host network of its own master.
        (
            "ebs_controller_replicas".into(),
            facts.masters.len().clamp(1, 2).to_string(),
        ),
    ];
    vars.extend(
        images
            .iter()
            .map(|(name, reference)| (format!("image:{name}"), reference.clone())),
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for (addon, template) in TEMPLATES {
        if !names.iter().any(|n| n == addon) {
            continue;
        }
        let missing: Vec<&str> = template
            .match_indices("{{image:")
            .filter_map(|(i, _)| template[i + 8..].split_once("}}").map(|(n, _)| n))
            .filter(|n| !images.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{addon}: the asset manifest names no image for {}",
                missing.join(", ")
            ));
        }
        let text = units::render(template, &vars);
        for doc in serde_norway::Deserializer::from_str(&text) {
            let body = serde_json::Value::deserialize(doc).map_err(|e| format!("{addon}: {e}"))?;
            if !body.is_null() {
                out.push(object_of(addon, body)?);
            }
        }
    }
    Ok(out)
}

/// What applying one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub addon: &'static str,
    pub object: String,
    pub changed: bool,
}

/// A failed call, before it is attributed to an object.
struct CallFailure {
    message: String,
    hint: String,
    transient: bool,
}

fn resource_version(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.pointer("/metadata/resourceVersion")?.as_str().map(str::to_string)
}

/// The API's answer to a failed call: its `Status` message when it sent one.
fn api_failure(object: &Object, status: StatusCode, body: &[u8]) -> CallFailure {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(300).collect());
    let hint = match status.as_u16() {
        401 => "the API server does not accept kforge's admin certificate: the cluster's PKI in the state store \
                may have been replaced; re-run the bootstrap so every master has the current CA"
            .to_string(),
        403 => "kforge's admin certificate (group system:masters) was denied: check the API server's \
                --authorization-mode"
            .to_string(),
        400 | 404 | 409 | 415 | 422 => format!(
            "the {} addon's manifest (templates/addons/{}.yaml) does not fit this API server",
            object.addon, object.addon
        ),
        _ => "the API server is not ready yet; kforge retried until --health-timeout".to_string(),
    };
    CallFailure {
        message: format!("HTTP {}: {message}", status.as_u16()),
        hint,
        // Overloaded or still starting (etcd leader election, post-start hooks).
        transient: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
    }
}

/// Server-side apply of one object; `Ok(true)` when it was created or changed.
async fn apply_one(client: &ApiClient, object: &Object) -> Result<bool, CallFailure> {
    let transport = |message: String| CallFailure {
        message,
        hint: format!(
            "the API endpoint {} must be reachable from this machine (controlPlane.apiAllowedCidrs) and serve the \
             cluster CA's certificate",
            client.base()
        ),
        transient: true,
    };
    let (status, body) = client
        .send(Method::GET, &object.path, None, Bytes::new())
        .await
        .map_err(transport)?;
    let before = match status {
        StatusCode::OK => resource_version(&body),
        StatusCode::NOT_FOUND => None,
        other => return Err(api_failure(object, other, &body)),
    };
    let patch = serde_json::to_vec(&object.body).expect("a JSON value serializes");
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("{}?fieldManager={FIELD_MANAGER}&force=true", object.path),
            // JSON is YAML: the apply content type takes either.
            Some("application/apply-patch+yaml"),
            Bytes::from(patch),
        )
        .await
        .map_err(transport)?;
    if !status.is_success() {
        return Err(api_failure(object, status, &body));
    }
    let after = resource_version(&body);
    Ok(before.is_none() || before != after)
}

/// Applies every object in order, retrying what may pass later (API starting, connection refused) until
/// `deadline`. `host` names the API endpoint in errors.
pub async fn apply(
    client: &ApiClient,
    host: &str,
    objects: &[Object],
    deadline: Duration,
) -> Result<Vec<Applied>, StepError> {
    let until = Instant::now() + deadline;
    let mut applied = Vec::new();
    for object in objects {
        let failed = |f: CallFailure| StepError {
            host: host.to_string(),
            step: format!("addon {}: {}", object.addon, object.describe()),
            message: f.message,
            hint: f.hint,
            transient: f.transient,
        };
        // The last transient failure: past the deadline, it is the error.
        let last: std::sync::Mutex<Option<CallFailure>> = Default::default();
        let waited = Wait::new(object.describe(), until.saturating_duration_since(Instant::now()))
            .until(|| async {
                match apply_one(client, object).await {
                    Ok(changed) => Ok(Step::Done(changed)),
                    Err(f) if f.transient => {
                        tracing::debug!(object = %object.describe(), error = %f.message, "retrying an addon object");
                        let reason = f.message.clone();
                        *last.lock().expect("never poisoned") = Some(f);
                        Ok(Step::Blocked { reason })
                    }
                    Err(f) => Err(failed(f).into()),
                }
            })
            .await;
        let changed = match waited {
            Ok(changed) => changed,
            Err(e) => {
                return Err(e.downcast::<StepError>().unwrap_or_else(|_| {
                    let f = last.into_inner().expect("never poisoned");
                    failed(f.expect("a deadline follows a transient failure"))
                }));
            }
        };
        applied.push(Applied {
            addon: object.addon,
            object: object.describe(),
            changed,
        });
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    //! Against an in-process HTTPS server that plays the API server's part kforge relies on (no kube-apiserver
    //! binary is obtainable on the test machines): mutual TLS with the cluster's own PKI, server-side apply's
    //! content type and field manager, resourceVersion bumped only by a real change, namespaces that must exist.

    use super::*;
    use crate::bootstrap::pki::{CLUSTER_CA, Member, Pki, PkiRequest};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use std::collections::{HashMap, VecDeque};
    use std::sync::Arc;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeApi {
        /// Path → (resourceVersion, the applied body).
        objects: HashMap<String, (u64, serde_json::Value)>,
        revision: u64,
        /// "METHOD path?query content-type", in order.
        requests: Vec<String>,
        /// Path → statuses to answer its next PATCHes with, before applying.
        failures: HashMap<String, VecDeque<u16>>,
    }

    fn status(code: u16, message: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code});
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    fn with_version(body: &serde_json::Value, rv: u64) -> Response<Full<Bytes>> {
        let mut body = body.clone();
        body["metadata"]["resourceVersion"] = serde_json::Value::String(rv.to_string());
        Response::new(Full::new(Bytes::from(body.to_string())))
    }

    /// The namespace a namespaced path names, if any.
    fn namespace_of(path: &str) -> Option<&str> {
        let rest = path.split("/namespaces/").nth(1)?;
        let (ns, tail) = rest.split_once('/')?;
        (!tail.is_empty()).then_some(ns)
    }

    async fn handle(api: Arc<Mutex<FakeApi>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut api = api.lock().unwrap();
        api.requests.push(format!("{method} {path}?{query} {content_type}"));
        if let Some(ns) = namespace_of(&path)
            && !["default", "kube-system"].contains(&ns)
            && !api.objects.contains_key(&format!("/api/v1/namespaces/{ns}"))
        {
            return status(404, &format!("namespaces \"{ns}\" not found"));
        }
        match method {
            Method::GET => match api.objects.get(&path) {
                Some((rv, body)) => with_version(body, *rv),
                None => status(404, "not found"),
            },
            Method::PATCH => {
                if let Some(code) = api.failures.get_mut(&path).and_then(|q| q.pop_front()) {
                    return status(code, "the fake API was told to fail this call");
                }
                if content_type != "application/apply-patch+yaml" {
                    return status(415, "unsupported media type");
                }
                if query != "fieldManager=kforge&force=true" {
                    return status(400, "server-side apply needs a field manager");
                }
                let applied: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let unchanged = api.objects.get(&path).is_some_and(|(_, b)| *b == applied);
                if !unchanged {
                    api.revision += 1;
                    let rv = api.revision;
                    api.objects.insert(path.clone(), (rv, applied));
                }
                let (rv, body) = &api.objects[&path];
                with_version(body, *rv)
            }
            _ => status(405, "method not allowed"),
        }
    }

    fn pki(dir: &std::path::Path) -> Pki {
        let request = PkiRequest {
            cluster: "lab".into(),
            masters: vec![Member {
                name: "m1".into(),
                address: "127.0.0.1".parse().unwrap(),
            }],
            nodes: ["m1", "w1"]
                .iter()
                .map(|n| Member {
                    name: n.to_string(),
                    address: "127.0.0.1".parse().unwrap(),
                })
                .collect(),
            api_endpoint: None,
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        };
        Pki::ensure(dir, &request).unwrap().0
    }

    /// Serves the fake API over TLS with the apiserver certificate of `pki`, requiring a client certificate of
    /// its cluster CA. Returns the `https://127.0.0.1:PORT` URL.
    async fn serve(pki: &Pki, api: Arc<Mutex<FakeApi>>) -> String {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.certs[CLUSTER_CA].cert_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let serving = &pki.certs["apiserver"];
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let api = api.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(api, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        format!("https://127.0.0.1:{port}")
    }

    fn facts(pod_cidr: &str) -> ClusterFacts {
        ClusterFacts {
            cluster: "lab".into(),
            masters: Vec::new(),
            api_url: String::new(),
            service_cidr: "10.96.0.0/12".into(),
            pod_cidr: pod_cidr.into(),
            cluster_domain: "cluster.local".into(),
            cluster_dns: "10.96.0.10".into(),
            containerd_major: 1,
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            external_cloud: false,
            fail_cgroup_v1: false,
            eviction_hard: BTreeMap::new(),
            image_gc: None,
        }
    }

    fn all() -> Vec<String> {
        TEMPLATES.iter().map(|(s, _)| s.to_string()).collect()
    }

    #[test]
    fn every_addon_the_spec_accepts_has_objects_and_only_listed_ones_are_applied() {
        // What a spec may list, and the cloud controller that comes with provider ec2.
        let mut expected = vec![CLOUD_CONTROLLER];
        expected.extend(crate::model::SELF_BUILT_ADDONS);
        let mut templates = TEMPLATES.map(|(n, _)| n).to_vec();
        templates.sort();
        expected.sort();
        assert_eq!(templates, expected);
        for name in TEMPLATES.map(|(n, _)| n) {
            let only = objects(&facts("10.244.0.0/16"), &images(), &[name.to_string()]).unwrap();
            assert!(!only.is_empty() && only.iter().all(|o| o.addon == name), "{name}");
        }
        assert!(objects(&facts("10.244.0.0/16"), &images(), &[]).unwrap().is_empty());
    }

    fn images() -> BTreeMap<String, String> {
        crate::assets::manifest("1.34").unwrap().images
    }

    /// A fake API with a fresh PKI, kforge's admin client of it, and the addons' objects.
    struct Lab {
        api: Arc<Mutex<FakeApi>>,
        url: String,
        client: ApiClient,
        wanted: Vec<Object>,
        _dir: tempfile::TempDir,
    }

    impl Lab {
        async fn start() -> Lab {
            let dir = tempfile::tempdir().unwrap();
            let pki = pki(dir.path());
            let api = Arc::new(Mutex::new(FakeApi::default()));
            let url = serve(&pki, api.clone()).await;
            Lab {
                client: admin_client(&url, &pki),
                api,
                url,
                wanted: objects(&facts("10.244.0.0/16"), &images(), &all()).unwrap(),
                _dir: dir,
            }
        }
    }

    fn admin_client(url: &str, pki: &Pki) -> ApiClient {
        let admin = &pki.certs["admin"];
        ApiClient::new(url, &pki.certs[CLUSTER_CA].cert_pem, &admin.cert_pem, &admin.key_pem).unwrap()
    }

    #[test]
    fn every_addon_object_has_a_path_and_namespaces_come_before_what_they_hold() {
        let objects = objects(&facts("10.244.0.0/16"), &images(), &all()).unwrap();
        let describe: Vec<String> = objects.iter().map(Object::describe).collect();
        let at = |d: &str| {
            describe
                .iter()
                .position(|x| x == d)
                .unwrap_or_else(|| panic!("{d} in {describe:?}"))
        };
        assert!(at("Namespace kube-flannel") < at("DaemonSet kube-flannel/kube-flannel"));
        assert!(at("Namespace kube-flannel") < at("ServiceAccount kube-flannel/flannel"));
        let path = |d: &str| objects[at(d)].path.clone();
        assert_eq!(
            path("DaemonSet kube-flannel/kube-flannel"),
            "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel"
        );
        assert_eq!(
            path("ClusterRole kforge:flannel"),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/kforge:flannel"
        );
        assert_eq!(
            path("Service kube-system/kube-dns"),
            "/api/v1/namespaces/kube-system/services/kube-dns"
        );
        let dns = &objects[at("Service kube-system/kube-dns")].body;
        assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
        let cfg = &objects[at("ConfigMap kube-flannel/kube-flannel-cfg")].body;
        let net: serde_json::Value = serde_json::from_str(cfg["data"]["net-conf.json"].as_str().unwrap()).unwrap();
        assert_eq!(net["Network"], "10.244.0.0/16");
        let corefile = objects[at("ConfigMap kube-system/coredns")].body["data"]["Corefile"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(corefile.contains("kubernetes cluster.local in-addr.arpa"), "{corefile}");
        let ds = &objects[at("DaemonSet kube-flannel/kube-flannel")].body;
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"],
            images()["flannel"].as_str()
        );
        let missing = super::objects(&facts("10.244.0.0/16"), &BTreeMap::new(), &all()).unwrap_err();
        assert!(missing.contains("no image for"), "{missing}");
    }

    #[test]
    fn the_cloud_addons_run_where_they_must_with_the_clusters_tag_and_the_mirror() {
        let images = crate::assets::manifest("1.34")
            .unwrap()
            .images_in(Some("mirror.internal:5000/k8s"));
        let objects = objects(&facts("10.244.0.0/16"), &images, &all()).unwrap();
        let find = |d: &str| {
            objects
                .iter()
                .find(|o| o.describe() == d)
                .unwrap_or_else(|| panic!("{d}"))
        };
        // Every image of every addon comes from the mirror.
        for o in &objects {
            let text = o.body.to_string();
            for upstream in ["registry.k8s.io", "ghcr.io", "public.ecr.aws"] {
                assert!(!text.contains(upstream), "{} names {upstream}", o.describe());
            }
        }
        let ccm = &find("DaemonSet kube-system/aws-cloud-controller-manager").body["spec"]["template"]["spec"];
        assert_eq!(ccm["nodeSelector"]["node-role.kubernetes.io/control-plane"], "");
        assert_eq!(ccm["hostNetwork"], true);
        let args = ccm["containers"][0]["args"].to_string();
        assert!(
            args.contains("--cluster-name=lab") && args.contains("--leader-elect=true"),
            "{args}"
        );
        assert!(
            ccm["containers"][0]["image"]
                .as_str()
                .unwrap()
                .starts_with("mirror.internal:5000/k8s/provider-aws/")
        );
        let tolerated: Vec<&str> = ccm["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["key"].as_str())
            .collect();
        assert!(
            tolerated.contains(&"node.cloudprovider.kubernetes.io/uninitialized"),
            "{tolerated:?}"
        );
        let ebs = &find("Deployment kube-system/ebs-csi-controller").body["spec"];
        assert!(
            ebs["template"]["spec"]["containers"][0]["args"]
                .to_string()
                .contains("--k8s-tag-cluster-id=lab")
        );
        assert_eq!(
            ebs["template"]["spec"]["nodeSelector"]["node-role.kubernetes.io/control-plane"],
            ""
        );
        assert_eq!(ebs["replicas"], 1, "one master here: one controller");
        let gp3 = &find("StorageClass gp3").body;
        assert_eq!(
            gp3["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert_eq!(gp3["parameters"]["encrypted"], "true");
        assert_eq!(
            find("StorageClass gp3").path,
            "/apis/storage.k8s.io/v1/storageclasses/gp3"
        );
        let ms = &find("Deployment kube-system/metrics-server").body["spec"]["template"]["spec"];
        let args = ms["containers"][0]["args"].to_string();
        assert!(
            args.contains("--kubelet-certificate-authority=") && !args.contains("insecure"),
            "metrics-server verifies the kubelets: {args}"
        );
        assert_eq!(
            find("APIService v1beta1.metrics.k8s.io").path,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
        );
    }

    #[tokio::test]
    async fn addons_are_applied_over_mutual_tls_and_a_rerun_changes_nothing() {
        let lab = Lab::start().await;
        let (api, url, client, wanted) = (&lab.api, &lab.url, &lab.client, &lab.wanted);

        let first = apply(client, url, wanted, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.len(), wanted.len());
        assert!(first.iter().all(|a| a.changed), "{first:?}");
        {
            let api = api.lock().unwrap();
            assert_eq!(api.objects.len(), wanted.len());
            let patches: Vec<&String> = api.requests.iter().filter(|r| r.starts_with("PATCH")).collect();
            assert_eq!(patches.len(), wanted.len());
            assert!(
                patches
                    .iter()
                    .all(|r| r.ends_with("?fieldManager=kforge&force=true application/apply-patch+yaml"))
            );
        }

        let second = apply(client, url, wanted, Duration::from_secs(5)).await.unwrap();
        assert!(second.iter().all(|a| !a.changed), "{second:?}");

        // A new pod network touches flannel's configuration and nothing else.
        let moved = objects(&facts("10.200.0.0/16"), &images(), &all()).unwrap();
        let third = apply(client, url, &moved, Duration::from_secs(5)).await.unwrap();
        let changed: Vec<&str> = third.iter().filter(|a| a.changed).map(|a| a.object.as_str()).collect();
        assert_eq!(changed, ["ConfigMap kube-flannel/kube-flannel-cfg"]);
    }

    #[tokio::test]
    async fn a_busy_api_is_retried_and_a_rejected_object_is_named_with_the_apis_reason() {
        let lab = Lab::start().await;
        let (api, url, client, wanted) = (&lab.api, &lab.url, &lab.client, &lab.wanted);
        {
            let mut api = api.lock().unwrap();
            let ds = "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel".to_string();
            api.failures.insert(ds, VecDeque::from([503, 503]));
            let dep = "/apis/apps/v1/namespaces/kube-system/deployments/coredns".to_string();
            api.failures.insert(dep, VecDeque::from([422]));
        }
        let err = apply(client, url, wanted, Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(&err.host, url);
        assert_eq!(err.step, "addon coredns: Deployment kube-system/coredns");
        assert!(
            err.message.contains("HTTP 422") && err.message.contains("told to fail"),
            "{}",
            err.message
        );
        assert!(err.hint.contains("templates/addons/coredns.yaml"), "{}", err.hint);
        let api = api.lock().unwrap();
        assert!(
            api.objects
                .contains_key("/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel")
        );
        // 422 is not retried: one PATCH of the Deployment.
        let dep_patches = api
            .requests
            .iter()
            .filter(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/kube-system/deployments/coredns"))
            .count();
        assert_eq!(dep_patches, 1);
    }

    #[tokio::test]
    async fn an_api_server_outside_the_cluster_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = pki(&dir.path().join("real"));
        let other = pki(&dir.path().join("other"));
        let api = Arc::new(Mutex::new(FakeApi::default()));
        let url = serve(&other, api.clone()).await;
        let client = admin_client(&url, &real);
        let wanted = objects(&facts("10.244.0.0/16"), &images(), &all()).unwrap();
        let err = apply(&client, &url, &wanted, Duration::ZERO).await.unwrap_err();
        assert!(err.message.to_lowercase().contains("certificate"), "{}", err.message);
        assert!(err.hint.contains("cluster CA"), "{}", err.hint);
        assert!(api.lock().unwrap().requests.is_empty(), "nothing reached the impostor");
    }
}
