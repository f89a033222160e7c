//! Images of a local Docker daemon, read through the Engine API (`DOCKER_HOST`, else the default socket): the
//! image is exported as a `docker save` archive into a private temporary file, which is then pushed like any
//! docker-archive. Layers need random access for parallel, retryable uploads, so streaming the export straight to
//! the registry is not an option; skopeo's docker-daemon source spools the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::source::{self, Image};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const HINT: &str = "start Docker or set DOCKER_HOST; or push from oci:DIR or docker-archive:FILE, which need no daemon";

/// Where the Engine API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl Endpoint {
    /// `DOCKER_HOST` as the docker CLI reads it; the default socket without it.
    pub fn from_env() -> anyhow::Result<Endpoint> {
        match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => Endpoint::parse(&h),
            _ => Ok(Endpoint::Unix(DEFAULT_SOCKET.into())),
        }
    }

    fn parse(host: &str) -> anyhow::Result<Endpoint> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.into()));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) {
                bail!(
                    "DOCKER_HOST={host} with DOCKER_TLS_VERIFY: TLS to the Docker daemon is not supported\n  hint: {HINT}"
                );
            }
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()));
        }
        bail!("DOCKER_HOST={host}: only unix:// and tcp:// daemons are supported\n  hint: {HINT}")
    }

    async fn get(&self, path_and_query: &str) -> anyhow::Result<Response<Incoming>> {
        let req = Request::get(path_and_query)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let unreachable = || format!("no Docker daemon answers at {self}\n  hint: {HINT}");
        let response = match self {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.with_context(unreachable)?;
                send(stream, req).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.with_context(unreachable)?;
                send(stream, req).await
            }
        };
        response.with_context(|| format!("the Docker daemon at {self} did not answer {path_and_query}"))
    }
}

/// One HTTP/1 request over a fresh connection (the Engine API is asked two or three things per push).
async fn send<S>(stream: S, req: Request<Empty<Bytes>>) -> hyper::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

/// Exports `name` from the daemon and reads it as an image.
pub async fn load(name: &str) -> anyhow::Result<Image> {
    let endpoint = Endpoint::from_env()?;
    let name = if source::tag_of_name(name).is_some() || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    let probe = endpoint.get(&format!("/images/{}/json", escape(&name))).await?;
    match probe.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => bail!(
            "image {name} is not in the Docker daemon at {endpoint}\n  hint: build or pull it first, or check the \
             name with `docker images`"
        ),
        s => bail!(
            "the Docker daemon at {endpoint} answered {s} for image {name}: {}",
            text(probe).await
        ),
    }
    let spool = tempfile::Builder::new()
        .prefix("kforge-docker-export-")
        .suffix(".tar")
        .tempfile()
        .context("cannot create a temporary file for the daemon's export")?
        .into_temp_path();
    export(&endpoint, &name, &spool).await?;
    let path = spool.to_path_buf();
    let source = format!("docker-daemon:{name}");
    let mut image = tokio::task::spawn_blocking(move || source::load_docker_archive(&path, None, source)).await??;
    image.tag = source::tag_of_name(&name);
    image._spool = Some(spool);
    Ok(image)
}

async fn export(endpoint: &Endpoint, name: &str, to: &Path) -> anyhow::Result<()> {
    let response = endpoint.get(&format!("/images/get?names={}", escape(name))).await?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        bail!(
            "the Docker daemon at {endpoint} could not export {name}: {status}: {}",
            text(response).await
        );
    }
    let mut file = tokio::fs::File::create(to).await?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("the export of {name} from {endpoint} broke off"))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await?;
        }
    }
    file.flush().await?;
    Ok(())
}

async fn text(response: Response<Incoming>) -> String {
    match response.into_body().collect().await {
        Ok(b) => {
            let bytes = b.to_bytes();
            // The Engine API's errors are {"message": "..."}.
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string())
        }
        Err(e) => e.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            Endpoint::parse("unix:///tmp/d.sock").unwrap(),
            Endpoint::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375/").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(
            Endpoint::parse("ssh://host")
                .unwrap_err()
                .to_string()
                .contains("only unix://")
        );
        assert_eq!(escape("team/app:1.0"), "team%2Fapp%3A1.0");
    }

    #[tokio::test]
    async fn missing_daemon_is_named_with_a_hint() {
        let e = Endpoint::Unix("/nonexistent/docker.sock".into())
            .get("/_ping")
            .await
            .unwrap_err();
        let s = format!("{e:#}");
        assert!(
            s.contains("no Docker daemon answers at unix:///nonexistent/docker.sock"),
            "{s}"
        );
        assert!(s.contains("hint: start Docker"), "{s}");
    }
}
