//! An HTTPS client of one self-built cluster's API server, as kforge's admin: TLS pinned to the cluster CA (the
//! only trusted root), a client certificate to authenticate. The addons are applied through it, and the health
//! checks read Nodes, Pods and Leases with it, so the machine running kforge needs no kubectl.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::pki::{CLUSTER_CA, Pki};
use crate::errors::chain;

/// An HTTPS client of one cluster's API server: the cluster CA is the only trusted root, and the client
/// authenticates with a certificate.
pub struct ApiClient {
    base: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ApiClient {
    /// `api_url` is `https://HOST:PORT`.
    pub fn new(api_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<ApiClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| anyhow::anyhow!("the cluster CA is not a PEM certificate: {e:?}"))?;
            roots.add(cert)?;
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("the client certificate is not PEM: {e:?}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the client key is not a PEM private key: {e:?}"))?;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(ApiClient {
            base: api_url.trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; `Err` is a transport failure (refused, reset, TLS), with its cause chain.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .header("accept", "application/json");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| "no answer in 30s".to_string())?
            .map_err(|e| chain(&e))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| chain(&e))?.to_bytes();
        Ok((status, bytes))
    }
}

impl ApiClient {
    /// The cluster admin's client of `api_url`, from the cluster's PKI.
    pub fn admin(api_url: &str, pki: &Pki) -> anyhow::Result<ApiClient> {
        let (Some(ca), Some(admin)) = (pki.certs.get(CLUSTER_CA), pki.certs.get("admin")) else {
            anyhow::bail!("the PKI has no cluster CA or admin certificate");
        };
        ApiClient::new(api_url, &ca.cert_pem, &admin.cert_pem, &admin.key_pem)
    }

    /// kube-rs's client of the same cluster as the same admin (for drain, evictions and Node status, where
    /// kube-rs's typed API is worth more than a few raw requests).
    pub async fn kube_admin(cluster: &str, api_url: &str, pki: &Pki) -> anyhow::Result<kube::Client> {
        let (Some(ca), Some(admin)) = (pki.certs.get(CLUSTER_CA), pki.certs.get("admin")) else {
            anyhow::bail!("the PKI has no cluster CA or admin certificate");
        };
        kube_client(cluster, api_url, &ca.cert_pem, &admin.cert_pem, &admin.key_pem).await
    }

    /// GET `path` as JSON: `Ok((status, body))` for any answer (a body that is not JSON becomes a string), `Err`
    /// for a transport failure.
    pub async fn get_json(&self, path: &str) -> Result<(StatusCode, serde_json::Value), String> {
        let (status, body) = self.send(Method::GET, path, None, Bytes::new()).await?;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }
}

/// A kube-rs client of `api_url` trusting only `ca_pem` and authenticating with a client certificate (built from
/// the same kubeconfig `kforge kubeconfig` writes).
pub async fn kube_client(
    cluster: &str,
    api_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let text = super::units::kubeconfig(cluster, api_url, ca_pem, "kforge-admin", cert_pem, key_pem);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("the admin kubeconfig")?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .context("the admin kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    // kube-rs retries 429s itself (up to 15 times, minutes of backoff); an eviction's 429 is a budget saying "not
    // now", which the drain waits on in its own loop: naming the budget, and within --drain-timeout.
    config.default_retry = false;
    kube::Client::try_from(config).context("a client of the cluster's API")
}
