//! The push testbed: Debian's docker-registry (a real registry v2) on a free port per test, skopeo as the reference
//! client, image layouts written by hand, a TCP proxy that cuts connections mid-upload, a token-auth gate in front
//! of the registry (docker-registry's own token auth needs a JWT issuer), and a private dockerd for daemon pushes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A docker-registry process with its own storage; killed on drop.
pub struct Registry {
    pub port: u16,
    // Held: the registry's storage lives as long as the registry.
    _dir: TempDir,
    child: Child,
}

impl Registry {
    /// `htpasswd`: require Basic auth with this user and password.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: 127.0.0.1:{port}}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{}\n", bcrypt_hash(password))).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: kforge-test, path: {}}}}}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (scripts/test installs Debian's docker-registry)");
        wait_for_port(port, "docker-registry");
        Registry { port, _dir: dir, child }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// HTTP status of `HEAD /v2/{path}` (no auth).
    pub fn head(&self, path: &str) -> u16 {
        http_status(self.port, "HEAD", &format!("/v2/{path}"), None)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt htpasswd hash, by the system's crypt(3) through Python (the registry accepts only bcrypt).
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .expect("python3 runs");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        hash.starts_with("$2"),
        "bcrypt hash: {hash:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    hash
}

/// A minimal HTTP/1.0 request; returns the status.
pub fn http_status(port: u16, method: &str, path: &str, auth: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: x\r\n{auth}Accept: {OCI_MANIFEST}, {OCI_INDEX}\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A tar archive of one file, as an image layer.
pub fn tar_layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so layers of different tests differ but re-runs match.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a layout image is made of.
pub struct LayoutImage {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<String>,
}

/// Adds blobs to an OCI layout at `dir` and returns an image manifest over `layers` (not yet in index.json).
pub fn add_image(dir: &Path, layers: &[Vec<u8>], arch: &str) -> LayoutImage {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let config_digest = put(&config);
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": OCI_LAYER, "digest": put(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    LayoutImage {
        manifest_digest,
        manifest,
        config_digest,
        layers: diff_ids,
    }
}

/// Writes index.json naming `entries` (media type, digest, size, tag).
pub fn write_index(dir: &Path, entries: &[(&str, &str, usize, &str)]) {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(mt, d, size, tag)| {
            serde_json::json!({"mediaType": mt, "digest": d, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}})
        })
        .collect();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An OCI layout at `dir` with one image tagged `tag`.
pub fn layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> LayoutImage {
    let img = add_image(dir, layers, "amd64");
    write_index(dir, &[(OCI_MANIFEST, &img.manifest_digest, img.manifest.len(), tag)]);
    img
}

/// Runs skopeo with TLS verification off; panics with its stderr on failure.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect` of `docker://REF`: (manifest digest, layer digests).
pub fn inspect(reference: &str, creds: Option<&str>) -> (String, Vec<String>) {
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let r = format!("docker://{reference}");
    args.push(&r);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    let layers = v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (v["Digest"].as_str().unwrap().to_string(), layers)
}

/// `skopeo inspect --raw`: the manifest bytes as stored.
pub fn raw_manifest(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A TCP proxy to a local port that cuts a connection once it has carried more than `after` bytes upstream, `times`
/// times (then passes everything).
pub struct Cutter {
    pub port: u16,
    pub cuts: Arc<AtomicUsize>,
}

impl Cutter {
    pub fn start(upstream: u16, after: usize, times: usize) -> Cutter {
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let done = cuts.clone();
        rt().spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let done = done.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut dr, mut dw) = down.split();
                    let (mut ur, mut uw) = up.split();
                    let upward = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut carried = 0usize;
                        loop {
                            let n = match dr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            carried += n;
                            if carried > after && done.load(Ordering::SeqCst) < times {
                                done.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            if uw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downward = async {
                        let _ = tokio::io::copy(&mut ur, &mut dw).await;
                    };
                    // Whichever side ends first ends the connection (a cut drops both).
                    tokio::select! {
                        _ = upward => {}
                        _ = downward => {}
                    }
                });
            }
        });
        Cutter { port, cuts }
    }
}

/// A Bearer-token gate in front of a registry: `/token` hands out tokens for Basic `user:password`; `/v2/...` needs
/// a token and is forwarded. Records the scopes asked for.
pub struct TokenGate {
    pub port: u16,
    pub scopes: Arc<Mutex<Vec<String>>>,
    pub patches: Arc<Mutex<Vec<PatchHeaders>>>,
}

/// Of a blob PATCH: its Content-Length and Transfer-Encoding headers.
pub type PatchHeaders = (Option<String>, Option<String>);

type GateBody = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, headers: &[(&str, String)], body: &str) -> Response<GateBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

impl TokenGate {
    pub fn start(upstream: u16, user: &'static str, password: &'static str) -> TokenGate {
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let patches = Arc::new(Mutex::new(Vec::new()));
        let patched = patches.clone();
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        rt().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let client = client.clone();
                let seen = seen.clone();
                let patched = patched.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let client = client.clone();
                        let seen = seen.clone();
                        let patched = patched.clone();
                        async move {
                            if req.method() == hyper::Method::PATCH {
                                let header =
                                    |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                                patched
                                    .lock()
                                    .unwrap()
                                    .push((header("content-length"), header("transfer-encoding")));
                            }
                            Ok::<_, Infallible>(gate(req, &client, upstream, addr, &seen, user, password).await)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        TokenGate {
            port: addr.port(),
            scopes,
            patches,
        }
    }
}

async fn gate(
    req: Request<Incoming>,
    client: &Client<HttpConnector, Incoming>,
    upstream: u16,
    addr: SocketAddr,
    seen: &Mutex<Vec<String>>,
    user: &str,
    password: &str,
) -> Response<GateBody> {
    use base64::Engine as _;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if req.uri().path() == "/token" {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        if auth != expected {
            return full(
                StatusCode::UNAUTHORIZED,
                &[],
                r#"{"details":"incorrect username or password"}"#,
            );
        }
        let query = req.uri().query().unwrap_or_default();
        for kv in query.split('&') {
            if let Some(v) = kv.strip_prefix("scope=") {
                seen.lock()
                    .unwrap()
                    .push(v.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/"));
            }
        }
        return full(StatusCode::OK, &[], r#"{"token":"gate-token","expires_in":300}"#);
    }
    if auth != "Bearer gate-token" {
        return full(
            StatusCode::UNAUTHORIZED,
            &[(
                "www-authenticate",
                format!(r#"Bearer realm="http://{addr}/token",service="gate""#),
            )],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = format!("http://127.0.0.1:{upstream}{path}").parse().unwrap();
    parts.headers.remove("authorization");
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            // Locations point at the registry itself; clients must keep talking to the gate.
            if let Some(loc) = parts.headers.get("location").and_then(|v| v.to_str().ok()) {
                let rewritten = loc.replace(&format!("127.0.0.1:{upstream}"), &addr.to_string());
                parts.headers.insert("location", rewritten.parse().unwrap());
            }
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => full(StatusCode::BAD_GATEWAY, &[], &format!("gate: {e}")),
    }
}

/// A private dockerd (no bridge, no iptables) with its data in a temp dir; stopped on drop.
pub struct Dockerd {
    pub host: String,
    dir: TempDir,
    child: Child,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("dockerd runs (scripts/test installs Debian's docker.io)");
        let host = format!("unix://{}", sock.display());
        let d = Dockerd { host, dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .expect("docker CLI runs")
    }

    /// `docker import` of a root file system holding `files`; returns the image's layer diff ids.
    pub fn import(&self, name: &str, files: &[(&str, &[u8])]) -> Vec<String> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, *content).unwrap();
        }
        let rootfs = self.dir.path().join(format!("{}.tar", name.replace([':', '/'], "_")));
        std::fs::write(&rootfs, b.into_inner().unwrap()).unwrap();
        let out = self.docker(&["import", rootfs.to_str().unwrap(), name]);
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = self.docker(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", name]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount its overlays before the temp dir goes.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blob digests in an OCI layout directory.
pub fn layout_blobs(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("sha256:{}", e.file_name().to_string_lossy()),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}
