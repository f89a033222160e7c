//! An HTTP proxy in front of moto that records each AWS call, can add latency, can answer a fraction of calls
//! with throttling / 5xx errors (never forwarding those, as a real throttle does not execute the call), and can
//! hold the response of the N-th mutating EC2 call forever so a test can kill the client right after AWS acted.
//! It also plays the part of cloud-init, which moto lacks: `GetConsoleOutput` answers carry an SSH host-key block
//! (fingerprint and public key derived from the instance id, see [`host_key_of`]) as a real instance prints it.
//! A gate holds calls of one action *before* forwarding them (a request accepted and not yet visible), and lets
//! them through in the order a test chooses, even after the client that sent them was killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One call that went through the proxy.
#[derive(Debug, Clone)]
pub struct Call {
    /// EC2 `Action` (query protocol), or `S3 METHOD /path`.
    pub action: String,
    pub faulted: bool,
    /// When the request reached the proxy and when its answer left (latency included).
    #[allow(dead_code, reason = "read by benches/network_phase.rs, which shares this module")]
    pub received: Instant,
    pub answered: Instant,
}

impl Call {
    /// Changes something in the cloud (EC2 calls other than Describe*/Get*; S3 writes).
    pub fn is_mutating(&self) -> bool {
        match self.action.strip_prefix("S3 ") {
            Some(rest) => !rest.starts_with("GET") && !rest.starts_with("HEAD"),
            None => !["Describe", "Get", "List"].iter().any(|p| self.action.starts_with(p)),
        }
    }
}

#[derive(Default)]
struct Settings {
    latency: Duration,
    /// Parts per thousand of calls answered with an error instead of being forwarded.
    fault_per_mille: u64,
    /// Hold the response of this mutating EC2 call (1-based) forever, after forwarding it.
    hold_at: Option<usize>,
    /// Hold the response of the first call of this action (`RunInstances`) forever, after forwarding it.
    hold_action: Option<String>,
    /// Leave console output as moto has it (no host keys), as an image whose cloud-init prints nothing.
    silent_consoles: bool,
}

pub struct Proxy {
    pub addr: SocketAddr,
    settings: Mutex<Settings>,
    calls: Mutex<Vec<Call>>,
    mutating_ec2: AtomicUsize,
    held: AtomicBool,
    rng: AtomicU64,
    /// Calls forwarded to the upstream and not yet answered by it.
    forwarding: Arc<AtomicUsize>,
    /// The action the gate holds, if any.
    gate: Mutex<Option<String>>,
    /// Gated calls received so far; each waits until `gate_open` reaches its number.
    gated: AtomicU64,
    gate_open: tokio::sync::watch::Sender<u64>,
    /// Gated calls forwarded and answered upstream.
    gate_answered: Arc<AtomicU64>,
    /// `(action, ClientToken)` of every call that carried a token, as received.
    tokens: Mutex<Vec<(String, String)>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on the given runtime.
    pub fn start(rt: &tokio::runtime::Runtime, upstream: String) -> Arc<Proxy> {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let proxy = Arc::new(Proxy {
            addr: listener.local_addr().expect("local addr"),
            settings: Mutex::new(Settings::default()),
            calls: Mutex::new(Vec::new()),
            mutating_ec2: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            forwarding: Arc::new(AtomicUsize::new(0)),
            gate: Mutex::new(None),
            gated: AtomicU64::new(0),
            gate_open: tokio::sync::watch::Sender::new(0),
            gate_answered: Arc::new(AtomicU64::new(0)),
            tokens: Mutex::new(Vec::new()),
        });
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let p = Arc::clone(&proxy);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let p = Arc::clone(&p);
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let p = Arc::clone(&p);
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move { Ok::<_, Infallible>(p.handle(req, &client, &upstream).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Back to a transparent proxy with an empty record.
    pub fn reset(&self) {
        *self.settings.lock().unwrap() = Settings::default();
        self.calls.lock().unwrap().clear();
        self.mutating_ec2.store(0, Ordering::SeqCst);
        self.held.store(false, Ordering::SeqCst);
        self.tokens.lock().unwrap().clear();
        self.remove_gate();
    }

    /// Waits until every call a client sent has been answered upstream (a killed client's calls go on to AWS,
    /// as they would over a real network once sent).
    pub fn wait_forwarded(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.forwarding.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn set_latency(&self, d: Duration) {
        self.settings.lock().unwrap().latency = d;
    }

    pub fn set_fault_rate(&self, fraction: f64) {
        self.settings.lock().unwrap().fault_per_mille = (fraction * 1000.0) as u64;
    }

    pub fn set_silent_consoles(&self, silent: bool) {
        self.settings.lock().unwrap().silent_consoles = silent;
    }

    pub fn hold_action(&self, action: &str) {
        self.settings.lock().unwrap().hold_action = Some(action.to_string());
    }

    pub fn hold_at(&self, nth_mutating_ec2_call: usize) {
        self.settings.lock().unwrap().hold_at = Some(nth_mutating_ec2_call);
    }

    /// Holds every call of `action` before forwarding it, until [`Proxy::open_gate`] lets it through.
    pub fn gate_action(&self, action: &str) {
        *self.gate.lock().unwrap() = Some(action.to_string());
        self.gated.store(0, Ordering::SeqCst);
        self.gate_answered.store(0, Ordering::SeqCst);
        self.gate_open.send_replace(0);
    }

    /// How many calls the gate has held so far.
    pub fn gated(&self) -> u64 {
        self.gated.load(Ordering::SeqCst)
    }

    /// Lets the first `n` gated calls through (they go on to AWS whether or not their client is alive) and waits
    /// until AWS has answered them.
    pub fn open_gate(&self, n: u64) {
        self.gate_open.send_replace(n);
        let until = Instant::now() + Duration::from_secs(30);
        while self.gate_answered.load(Ordering::SeqCst) < n.min(self.gated()) {
            assert!(Instant::now() < until, "gated calls were not answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the gate for good.
    pub fn remove_gate(&self) {
        *self.gate.lock().unwrap() = None;
        self.gate_open.send_replace(u64::MAX);
    }

    /// The `ClientToken`s calls of `action` carried, in the order received.
    pub fn client_tokens(&self, action: &str) -> Vec<String> {
        self.tokens
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Whether a call is being held now.
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    fn roll(&self) -> u64 {
        // xorshift: deterministic per proxy, no extra crate.
        let mut x = self.rng.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::SeqCst);
        x % 1000
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        client: &Client<HttpConnector, Full<Bytes>>,
        upstream: &str,
    ) -> Response<Full<Bytes>> {
        let received = Instant::now();
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        // Query protocol (EC2, IAM, ELBv2, Auto Scaling): `Action=`; JSON protocol (SSM): `X-Amz-Target: Svc.Op`.
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .map(str::to_string);
        let action = text
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
            .or(target)
            .unwrap_or_else(|| format!("S3 {} {}", parts.method, parts.uri.path()));
        let console_of = (action == "GetConsoleOutput")
            .then(|| {
                text.split('&')
                    .find_map(|kv| kv.strip_prefix("InstanceId="))
                    .map(str::to_string)
            })
            .flatten();
        if let Some(token) = text.split('&').find_map(|kv| kv.strip_prefix("ClientToken=")) {
            self.tokens.lock().unwrap().push((action.clone(), token.to_string()));
        }
        let gate_number = (self.gate.lock().unwrap().as_deref() == Some(action.as_str()))
            .then(|| self.gated.fetch_add(1, Ordering::SeqCst) + 1);
        let is_ec2 = !action.starts_with("S3 ");
        let (latency, fault_per_mille, hold_at, silent_consoles) = {
            let mut s = self.settings.lock().unwrap();
            if s.hold_action.as_deref() == Some(action.as_str()) {
                // Counted as the next mutating call to hold, whatever its number.
                s.hold_action = None;
                s.hold_at = Some(self.mutating_ec2.load(Ordering::SeqCst) + 1);
            }
            (s.latency, s.fault_per_mille, s.hold_at, s.silent_consoles)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let faulted = fault_per_mille > 0 && self.roll() < fault_per_mille;
        let mut call = Call {
            action,
            faulted,
            received,
            answered: received,
        };
        if faulted {
            let reply = fault(is_ec2, self.roll().is_multiple_of(2));
            call.answered = Instant::now();
            self.calls.lock().unwrap().push(call);
            return reply;
        }
        let hold = is_ec2 && call.is_mutating() && {
            let n = self.mutating_ec2.fetch_add(1, Ordering::SeqCst) + 1;
            hold_at == Some(n)
        };
        let mut forward = Request::builder().method(parts.method.clone()).uri(format!(
            "{upstream}{}",
            parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        ));
        for (k, v) in &parts.headers {
            forward = forward.header(k, v);
        }
        // Forwarded from a task of its own: a client killed mid-call does not cancel what already reached AWS.
        let request = client.request(forward.body(Full::new(body)).expect("valid request"));
        let forwarding = Arc::clone(&self.forwarding);
        let mut gate = self.gate_open.subscribe();
        let gate_answered = Arc::clone(&self.gate_answered);
        let upstream_reply = tokio::spawn(async move {
            if let Some(n) = gate_number {
                let _ = gate.wait_for(|open| *open >= n).await;
            }
            forwarding.fetch_add(1, Ordering::SeqCst);
            let r = request.await;
            if gate_number.is_some() {
                gate_answered.fetch_add(1, Ordering::SeqCst);
            }
            let r = match r {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    Ok((parts, body.collect().await.map(|b| b.to_bytes()).unwrap_or_default()))
                }
                Err(e) => Err(e),
            };
            forwarding.fetch_sub(1, Ordering::SeqCst);
            r
        })
        .await
        .expect("the forwarding task does not panic");
        let reply = match upstream_reply {
            Ok((parts, mut body)) => {
                if let Some(instance) = console_of.as_deref().filter(|_| !silent_consoles) {
                    body = with_host_keys(&body, instance);
                }
                let mut parts = parts;
                parts.headers.remove(hyper::header::CONTENT_LENGTH);
                Response::from_parts(parts, Full::new(body))
            }
            Err(e) => {
                call.faulted = true;
                Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                    .unwrap()
            }
        };
        call.answered = Instant::now();
        self.calls.lock().unwrap().push(call);
        if hold {
            // AWS has acted; the client never hears about it.
            self.held.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        reply
    }
}

/// A throttling error or a bare 503, in the service's own error format.
fn fault(ec2: bool, throttle: bool) -> Response<Full<Bytes>> {
    let (status, body) = match (ec2, throttle) {
        (true, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>proxy</RequestID></Response>",
        ),
        (false, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>",
        ),
        (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// The ed25519 host key the proxy says an instance has: (public key line, `SHA256:` fingerprint).
pub fn host_key_of(instance: &str) -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = sha2::Sha256::digest(instance.as_bytes());
    let mut blob = Vec::new();
    for part in [b"ssh-ed25519".as_slice(), key.as_slice()] {
        blob.extend((part.len() as u32).to_be_bytes());
        blob.extend(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let fingerprint = base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(&blob));
    (
        format!("ssh-ed25519 {}", b64.encode(&blob)),
        format!("SHA256:{fingerprint}"),
    )
}

/// moto's console output with the block cloud-init prints on Amazon Linux 2023 appended (base64, as AWS sends it).
fn with_host_keys(body: &Bytes, instance: &str) -> Bytes {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8_lossy(body);
    let (Some(start), Some(end)) = (text.find("<output>"), text.find("</output>")) else {
        return body.clone();
    };
    let current = &text[start + "<output>".len()..end];
    let boot = b64
        .decode(current.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| current.to_string());
    let (key, fingerprint) = host_key_of(instance);
    let p = "<14>Nov 23 10:00:01 cloud-init:";
    let console = format!(
        "{boot}{p} #############################################################\n\
         {p} -----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
         {p} 256 {fingerprint} root@ip-10-0-0-1.ec2.internal (ED25519)\n\
         {p} -----END SSH HOST KEY FINGERPRINTS-----\n\
         {p} #############################################################\n\
         -----BEGIN SSH HOST KEY KEYS-----\n{key} root@ip-10-0-0-1.ec2.internal\n-----END SSH HOST KEY KEYS-----\n"
    );
    Bytes::from(format!(
        "{}<output>{}</output>{}",
        &text[..start],
        b64.encode(console),
        &text[end + "</output>".len()..]
    ))
}
