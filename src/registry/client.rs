//! A client of the OCI distribution API (registry v2) for pushing: blob HEAD, cross-repository mount, upload
//! sessions (POST, one PATCH, PUT with the digest), manifest HEAD/PUT. Authentication follows the registry's
//! challenge: anonymous, Basic, or Bearer tokens fetched from the realm it names (cached per scope until they
//! expire). Credentials that can go stale (ECR's 12-hour tokens) are refreshed once on a 401.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::RequestBody;
use super::source::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::errors::chain;

/// Longest a call without a large body may take (HEAD, POST, PUT of a manifest, token fetch).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A username and password (ECR: `AWS` and the decoded authorization token).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// Credentials that can be fetched again when the registry refuses the current ones.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// `fresh` asks to bypass any cache (the registry just answered 401).
    async fn credentials(&self, fresh: bool) -> anyhow::Result<Credentials>;
}

/// A failed registry call, as the user should read it; `transient` says whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub message: String,
    pub transient: bool,
    pub status: Option<u16>,
}

impl RegistryError {
    fn new(message: String, transient: bool, status: Option<u16>) -> RegistryError {
        RegistryError {
            message,
            transient,
            status,
        }
    }
}

#[derive(Debug, Clone)]
enum Scheme {
    Unknown,
    Anonymous,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// One registry, e.g. `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`.
pub struct Registry {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>,
    base: String,
    /// `host[:port]`, as messages name it.
    pub host: String,
    static_credentials: Option<Credentials>,
    source: Option<Arc<dyn CredentialSource>>,
    credentials: Mutex<Option<Credentials>>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// The scope a call needs: push to `repository`, and pull from `also_pull` (a mount's source).
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub repository: &'a str,
    pub also_pull: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// Push (and pull) rights on `repository` alone.
    pub fn push(repository: &'a str) -> Scope<'a> {
        Scope {
            repository,
            also_pull: None,
        }
    }
}

impl Registry {
    /// `base` is `http(s)://host[:port]`.
    pub fn new(
        base: &str,
        credentials: Option<Credentials>,
        source: Option<Arc<dyn CredentialSource>>,
    ) -> anyhow::Result<Registry> {
        let base = base.trim_end_matches('/').to_string();
        let host = base
            .split_once("://")
            .map(|(_, h)| h.to_string())
            .ok_or_else(|| anyhow::anyhow!("registry endpoint {base} is not a URL"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| anyhow::anyhow!("cannot load the system's TLS root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Registry {
            http: client,
            base,
            host,
            static_credentials: credentials,
            source,
            credentials: Mutex::new(None),
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn current_credentials(&self, fresh: bool) -> anyhow::Result<Option<Credentials>> {
        if let Some(c) = &self.static_credentials {
            return Ok(Some(c.clone()));
        }
        let Some(source) = &self.source else { return Ok(None) };
        if !fresh && let Some(c) = self.credentials.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(c));
        }
        let c = source.credentials(fresh).await?;
        *self.credentials.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(Some(c))
    }

    fn scope_strings(scope: &Scope) -> Vec<String> {
        let mut s = vec![format!("repository:{}:pull,push", scope.repository)];
        if let Some(from) = scope.also_pull {
            s.push(format!("repository:{from}:pull"));
        }
        s
    }

    /// The Authorization header for `scope`, fetching a token when the registry wants Bearer.
    async fn authorization(&self, scope: &Scope<'_>) -> Result<Option<HeaderValue>, RegistryError> {
        let scheme = self.scheme.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match scheme {
            Scheme::Unknown | Scheme::Anonymous => Ok(None),
            Scheme::Basic => {
                let creds = self.current_credentials(false).await.map_err(|e| self.local(e))?;
                Ok(creds.map(|c| basic(&c)))
            }
            Scheme::Bearer { realm, service } => {
                let key = Self::scope_strings(scope).join(" ");
                if let Some((token, until)) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
                    && Instant::now() < *until
                {
                    return Ok(Some(bearer(token)?));
                }
                let (token, ttl) = self.fetch_token(&realm, service.as_deref(), scope).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, (token.clone(), Instant::now() + ttl));
                Ok(Some(bearer(&token)?))
            }
        }
    }

    fn local(&self, e: anyhow::Error) -> RegistryError {
        RegistryError::new(format!("{e:#}"), false, None)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope<'_>,
    ) -> Result<(String, Duration), RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut push = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(&format!("{k}={}", super::daemon::escape(v)));
            sep = '&';
        };
        if let Some(s) = service {
            push("service", s);
        }
        for s in Self::scope_strings(scope) {
            push("scope", &s);
        }
        let mut req = Request::get(&url);
        if let Some(c) = self.current_credentials(false).await.map_err(|e| self.local(e))? {
            req = req.header(header::AUTHORIZATION, basic(&c));
        }
        let req = req
            .body(RequestBody::Empty)
            .map_err(|e| RegistryError::new(format!("bad token URL {url}: {e}"), false, None))?;
        let resp = self.round_trip(req, "token request").await?;
        let status = resp.status();
        let body = read_body(resp).await;
        if !status.is_success() {
            return Err(RegistryError::new(
                format!(
                    "the token service of {} ({realm}) refused a token for {}: {status}{}\n  hint: check the \
                     credentials (--username/--password-stdin, or `docker login {}`) and that they may push there",
                    self.host,
                    scope.repository,
                    error_suffix(&body),
                    self.host
                ),
                status.is_server_error(),
                Some(status.as_u16()),
            ));
        }
        #[derive(serde::Deserialize)]
        struct TokenDoc {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let doc: TokenDoc = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::new(
                format!("the token service of {} answered something else: {e}", self.host),
                false,
                None,
            )
        })?;
        let token = doc.token.or(doc.access_token).ok_or_else(|| {
            RegistryError::new(
                format!("the token service of {} answered without a token", self.host),
                false,
                None,
            )
        })?;
        // Tokens default to 60 s; renew a little early.
        let ttl = Duration::from_secs(doc.expires_in.unwrap_or(60).max(20) - 10);
        Ok((token, ttl))
    }

    async fn round_trip(&self, req: Request<RequestBody>, what: &str) -> Result<Response<Incoming>, RegistryError> {
        let has_large_body = req.body().content_length() > 1 << 20;
        let fut = self.http.request(req);
        let result = if has_large_body {
            fut.await
        } else {
            match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(RegistryError::new(
                        format!(
                            "{} did not answer the {what} within {}s",
                            self.host,
                            CALL_TIMEOUT.as_secs()
                        ),
                        true,
                        None,
                    ));
                }
            }
        };
        result.map_err(|e| {
            let connect = e.is_connect();
            let detail = chain(&e);
            RegistryError::new(
                if connect {
                    format!(
                        "cannot reach registry {}: {detail}\n  hint: check the address; a plain-HTTP registry needs \
                         --insecure",
                        self.host
                    )
                } else {
                    format!("the connection to {} broke during the {what}: {detail}", self.host)
                },
                true,
                None,
            )
        })
    }

    /// Sends a request with the auth `scope` needs; on a 401 learns the challenge, and if what it then sends is
    /// refused too, refreshes the credentials (or token) once. `body` is called again for each pass.
    pub async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        headers: &[(header::HeaderName, String)],
        body: &mut (dyn FnMut() -> RequestBody + Send),
        scope: &Scope<'_>,
        what: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        let url = self.url(path_or_url);
        // At most three passes: as configured; after learning the challenge; with refreshed credentials.
        let mut refreshed = false;
        loop {
            let mut req = Request::builder().method(method.clone()).uri(&url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let b = body();
            req = req.header(header::CONTENT_LENGTH, b.content_length());
            if let Some(auth) = self.authorization(scope).await? {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let req = req
                .body(b)
                .map_err(|e| RegistryError::new(format!("bad request to {url}: {e}"), false, None))?;
            let resp = self.round_trip(req, what).await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let previous = self.scheme.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let scheme = parse_challenge(&challenge);
            let same_kind = std::mem::discriminant(&previous) == std::mem::discriminant(&scheme);
            if same_kind {
                // What we sent was refused: stale credentials (ECR tokens expire) or an expired token. Once.
                let can_refresh = self.source.is_some() || matches!(scheme, Scheme::Bearer { .. });
                if refreshed || !can_refresh {
                    return Ok(resp);
                }
                refreshed = true;
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clear();
                if self.source.is_some() {
                    self.current_credentials(true).await.map_err(|e| self.local(e))?;
                }
                continue;
            }
            if matches!(scheme, Scheme::Anonymous) {
                return Ok(resp);
            }
            if matches!(scheme, Scheme::Basic) && self.current_credentials(false).await.ok().flatten().is_none() {
                return Err(RegistryError::new(
                    format!(
                        "registry {} asks for a username and password\n  hint: pass --username and \
                         --password-stdin, set KFORGE_REGISTRY_USERNAME/KFORGE_REGISTRY_PASSWORD, or `docker login {}`",
                        self.host, self.host
                    ),
                    false,
                    Some(401),
                ));
            }
            *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = scheme;
        }
    }

    /// `GET /v2/`: learns how the registry authenticates before any large request is made.
    pub async fn probe(&self, scope: &Scope<'_>) -> Result<(), RegistryError> {
        let resp = self
            .send(
                Method::GET,
                "/v2/",
                &[],
                &mut || RequestBody::Empty,
                scope,
                "version check",
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::OK {
            if matches!(*self.scheme.lock().unwrap_or_else(|e| e.into_inner()), Scheme::Unknown) {
                *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Scheme::Anonymous;
            }
            return Ok(());
        }
        let body = read_body(resp).await;
        Err(self.failure("version check", status, &body))
    }

    /// A failed response as a [`RegistryError`] with the registry's own error codes and a hint.
    pub fn failure(&self, what: &str, status: StatusCode, body: &[u8]) -> RegistryError {
        let hint = match status.as_u16() {
            401 => "\n  hint: the credentials were refused: check --username/--password-stdin or `docker login`",
            403 => "\n  hint: the credentials may not push to this repository",
            404 => "\n  hint: is this a registry v2 endpoint (and the repository name right)?",
            _ => "",
        };
        let transient = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        RegistryError::new(
            format!(
                "registry {} answered {status} to the {what}{}{hint}",
                self.host,
                error_suffix(body)
            ),
            transient,
            Some(status.as_u16()),
        )
    }

    /// Whether the repository has the blob.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let scope = Scope::push(repo);
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                &mut || RequestBody::Empty,
                &scope,
                "blob check",
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.failure(&format!("check of blob {digest}"), s, &[])),
        }
    }

    /// Asks the registry to mount `digest` from `from`: `Ok(None)` when mounted, else the upload session it opened
    /// instead.
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<Option<String>, RegistryError> {
        let scope = Scope {
            repository: repo,
            also_pull: Some(from),
        };
        let path = format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={}",
            super::daemon::escape(digest),
            super::daemon::escape(from)
        );
        let resp = self
            .send(
                Method::POST,
                &path,
                &[],
                &mut || RequestBody::Empty,
                &scope,
                "blob mount",
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(location(&resp, &self.host)?)),
            s => {
                let body = read_body(resp).await;
                Err(self.failure(&format!("mount of blob {digest} from {from}"), s, &body))
            }
        }
    }

    /// Opens an upload session; returns its location.
    pub async fn start_upload(&self, repo: &str) -> Result<String, RegistryError> {
        let scope = Scope::push(repo);
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                &mut || RequestBody::Empty,
                &scope,
                "upload start",
            )
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED => location(&resp, &self.host),
            s => {
                let body = read_body(resp).await;
                Err(self.failure("upload start", s, &body))
            }
        }
    }

    /// Sends a blob's bytes in one PATCH; returns the session's next location.
    pub async fn patch(
        &self,
        repo: &str,
        location_url: &str,
        body: &mut (dyn FnMut() -> RequestBody + Send),
        len: u64,
        what: &str,
    ) -> Result<String, RegistryError> {
        let scope = Scope::push(repo);
        let mut headers = vec![(header::CONTENT_TYPE, "application/octet-stream".to_string())];
        if len > 0 {
            headers.push((header::CONTENT_RANGE, format!("0-{}", len - 1)));
        }
        let resp = self
            .send(Method::PATCH, location_url, &headers, body, &scope, what)
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => location(&resp, &self.host),
            s => {
                let body = read_body(resp).await;
                Err(self.failure(what, s, &body))
            }
        }
    }

    /// Completes an upload session: the registry checks the digest and the blob exists from then on.
    pub async fn commit(&self, repo: &str, location_url: &str, digest: &str) -> Result<(), RegistryError> {
        let scope = Scope::push(repo);
        let sep = if location_url.contains('?') { '&' } else { '?' };
        let url = format!("{location_url}{sep}digest={}", super::daemon::escape(digest));
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[],
                &mut || RequestBody::Empty,
                &scope,
                "upload commit",
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            s => {
                let body = read_body(resp).await;
                Err(self.failure(&format!("commit of blob {digest}"), s, &body))
            }
        }
    }

    /// Abandons an upload session (best effort: registries also expire them).
    pub async fn cancel(&self, repo: &str, location_url: &str) {
        let scope = Scope::push(repo);
        let _ = self
            .send(
                Method::DELETE,
                location_url,
                &[],
                &mut || RequestBody::Empty,
                &scope,
                "upload cancel",
            )
            .await;
    }

    /// The digest `reference` (a tag or digest) points at, if it exists.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>, RegistryError> {
        let scope = Scope::push(repo);
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(", ");
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, accept)],
                &mut || RequestBody::Empty,
                &scope,
                "manifest check",
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.failure(&format!("check of manifest {reference}"), s, &[])),
        }
    }

    /// Puts a manifest under `reference`; returns the digest the registry computed.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Option<String>, RegistryError> {
        let scope = Scope::push(repo);
        let resp = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::CONTENT_TYPE, media_type.to_string())],
                &mut || RequestBody::bytes(bytes.clone()),
                &scope,
                "manifest upload",
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            s => {
                let body = read_body(resp).await;
                Err(self.failure(&format!("upload of manifest {reference}"), s, &body))
            }
        }
    }
}

fn basic(c: &Credentials) -> HeaderValue {
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut v = HeaderValue::from_str(&format!("Basic {raw}")).expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

fn bearer(token: &str) -> Result<HeaderValue, RegistryError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        RegistryError::new(
            "the registry's token service sent an unusable token".into(),
            false,
            None,
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn location(resp: &Response<Incoming>, host: &str) -> Result<String, RegistryError> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            RegistryError::new(
                format!("registry {host} opened an upload without a Location"),
                true,
                None,
            )
        })
}

pub async fn read_body(resp: Response<Incoming>) -> Vec<u8> {
    match resp.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// `: BLOB_UPLOAD_INVALID: blob upload invalid` from the distribution API's error document.
fn error_suffix(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Doc {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(doc) = serde_json::from_slice::<Doc>(body) {
        let parts: Vec<String> = doc
            .errors
            .iter()
            .map(|e| {
                [e.code.as_deref(), e.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        String::new()
    } else {
        format!(": {}", text.chars().take(200).collect::<String>())
    }
}

/// `Bearer realm="https://auth.example/token",service="registry.example"` or `Basic realm="x"`.
fn parse_challenge(header: &str) -> Scheme {
    let (kind, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        map.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    match kind.to_ascii_lowercase().as_str() {
        "bearer" => match map.remove("realm") {
            Some(realm) => Scheme::Bearer {
                realm,
                service: map.remove("service"),
            },
            None => Scheme::Anonymous,
        },
        "basic" => Scheme::Basic,
        _ => Scheme::Anonymous,
    }
}

#[cfg(test)]
mod tests;
