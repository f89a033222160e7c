//! An HTTP proxy in front of moto that records each AWS call, can add latency, can answer a fraction of calls
//! with throttling / 5xx errors (never forwarding those, as a real throttle does not execute the call), and can
//! hold the response of the N-th mutating EC2 call forever so a test can kill the client right after AWS acted.

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
}

pub struct Proxy {
    pub addr: SocketAddr,
    settings: Mutex<Settings>,
    calls: Mutex<Vec<Call>>,
    mutating_ec2: AtomicUsize,
    held: AtomicBool,
    rng: AtomicU64,
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
    }

    pub fn set_latency(&self, d: Duration) {
        self.settings.lock().unwrap().latency = d;
    }

    pub fn set_fault_rate(&self, fraction: f64) {
        self.settings.lock().unwrap().fault_per_mille = (fraction * 1000.0) as u64;
    }

    pub fn hold_at(&self, nth_mutating_ec2_call: usize) {
        self.settings.lock().unwrap().hold_at = Some(nth_mutating_ec2_call);
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
        let action = text
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
            .unwrap_or_else(|| format!("S3 {} {}", parts.method, parts.uri.path()));
        let is_ec2 = !action.starts_with("S3 ");
        let (latency, fault_per_mille, hold_at) = {
            let s = self.settings.lock().unwrap();
            (s.latency, s.fault_per_mille, s.hold_at)
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
            let reply = fault(is_ec2, self.roll() % 2 == 0);
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
        let reply = match client
            .request(forward.body(Full::new(body)).expect("valid request"))
            .await
        {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
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
