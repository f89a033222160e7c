//! EKS bearer tokens, as `aws eks get-token` and aws-iam-authenticator make them: `k8s-aws-v1.` + unpadded
//! base64url of an STS `GetCallerIdentity` URL presigned with SigV4 (query signing, 60 s), whose signed headers
//! include `x-k8s-aws-id: CLUSTER`. The API server's authenticator replays the URL to learn who is calling. No AWS
//! CLI needed; the credentials come from the standard chain.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use serde::Serialize;

use super::Aws;

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// How long the presigned URL is valid; the authenticator accepts tokens up to 15 minutes old.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(60);
/// When kubectl should ask for a new token: a minute before the authenticator's 15 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// The STS endpoint of `region` (the authenticator only accepts real STS hosts, so no endpoint override).
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// The presigned `GetCallerIdentity` URL for `cluster` in `region`, signed at `time`.
pub fn presigned_url(
    region: &str,
    cluster: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> anyhow::Result<String> {
    let url = format!(
        "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_host(region)
    );
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRY);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()?
        .into();
    let host = sts_host(region);
    let headers = [("host", host.as_str()), (CLUSTER_HEADER, cluster)];
    let signable = SignableRequest::new("GET", url.as_str(), headers.into_iter(), SignableBody::Bytes(&[]))?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    let (_, query) = instructions.into_parts();
    let mut signed = url;
    for (name, value) in query {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&aws_sigv4_query_escape(&value));
    }
    Ok(signed)
}

/// RFC 3986 escaping as SigV4 wants it in query strings (unreserved characters kept, everything else %XX).
fn aws_sigv4_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn token_from_url(url: &str) -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

/// What `kubectl` expects from an exec credential plugin.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredential {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub spec: serde_json::Value,
    pub status: ExecCredentialStatus,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredentialStatus {
    pub expiration_timestamp: String,
    pub token: String,
}

/// A fresh ExecCredential for `cluster`, signed with the credentials of `aws`'s chain.
pub async fn exec_credential(aws: &Aws, cluster: &str) -> anyhow::Result<ExecCredential> {
    let region = aws.region();
    anyhow::ensure!(
        !region.is_empty(),
        "no region for the token\n  hint: pass --region, or set AWS_REGION"
    );
    let provider = aws.credentials_provider().ok_or_else(|| {
        anyhow::anyhow!("no AWS credentials are configured\n  hint: set AWS_PROFILE or log in (`aws sso login`)")
    })?;
    let credentials = provider.provide_credentials().await.map_err(|e| {
        anyhow::anyhow!("cannot load AWS credentials: {e}\n  hint: check AWS_PROFILE / --profile, or log in again")
    })?;
    let now = SystemTime::now();
    let url = presigned_url(&region, cluster, &credentials, now)?;
    Ok(ExecCredential {
        kind: "ExecCredential",
        api_version: "client.authentication.k8s.io/v1beta1",
        spec: serde_json::json!({}),
        status: ExecCredentialStatus {
            expiration_timestamp: humantime::format_rfc3339_seconds(now + TOKEN_LIFETIME).to_string(),
            token: token_from_url(&url),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )
    }

    /// The same request signed by botocore (AWS's Python signer, which `aws eks get-token` uses) at the same time.
    const BOTOCORE_URL: &str = "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261123%2Fus-west-2%2Fsts%2Faws4_request&X-Amz-Date=20261123T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=b8e3cb8130101614a0b234b34ff3c52b6625e6ec9dc1ac76446a931e4329fe6e";

    #[test]
    fn presigned_url_matches_botocore() {
        let at = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let url = presigned_url("us-west-2", "ml-gpu", &example_credentials(), at).unwrap();
        assert_eq!(url, BOTOCORE_URL);
    }

    #[test]
    fn another_cluster_is_another_signature() {
        let at = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let url = presigned_url("us-west-2", "other", &example_credentials(), at).unwrap();
        assert_ne!(url, BOTOCORE_URL);
        assert!(url.starts_with(&BOTOCORE_URL[..BOTOCORE_URL.find("X-Amz-Signature").unwrap()]));
    }

    #[test]
    fn session_tokens_are_signed_in() {
        let creds = Credentials::new("AKID", "SECRET", Some("SESSION/TOKEN".into()), None, "test");
        let url = presigned_url("eu-west-1", "c", &creds, SystemTime::now()).unwrap();
        assert!(url.contains("X-Amz-Security-Token=SESSION%2FTOKEN"), "{url}");
    }

    #[test]
    fn token_is_prefixed_unpadded_base64url() {
        let token = token_from_url(BOTOCORE_URL);
        let body = token.strip_prefix(TOKEN_PREFIX).unwrap();
        assert!(!body.contains('=') && !body.contains('+') && !body.contains('/'));
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), BOTOCORE_URL);
    }

    #[test]
    fn china_regions_use_their_own_sts_host() {
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
    }
}
