//! ECR as a push target: the repository is found or created (scan-on-push, tag immutability and a lifecycle policy
//! from flags; settings given explicitly are converged on existing repositories too), and registry credentials come
//! from GetAuthorizationToken, cached on disk (0600) per registry until shortly before they expire and fetched
//! again when the registry refuses them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability, Tag};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::cache::cache_file;
use super::client::{CredentialSource, Credentials};
use crate::aws::{ErrorClass, aws_err, sdk_class};

/// Repository settings from the command line; `None` = not asked for (defaults apply only at creation).
#[derive(Debug, Clone, Default)]
pub struct RepositorySettings {
    pub scan_on_push: Option<bool>,
    pub immutable_tags: Option<bool>,
    /// Keep this many most recent images; older ones expire.
    pub keep_images: Option<u32>,
    /// Untagged images expire after this many days.
    pub expire_untagged_days: Option<u32>,
}

/// A repository ready to push to.
#[derive(Debug, Clone)]
pub struct Repository {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com`
    pub registry_host: String,
    pub registry_id: String,
    pub name: String,
    pub created: bool,
    /// What was changed on an existing repository.
    pub updated: Vec<String>,
}

/// The lifecycle policy the settings ask for, rule by rule as the ECR console writes them.
pub fn lifecycle_policy(s: &RepositorySettings) -> Option<String> {
    let mut rules = Vec::new();
    if let Some(days) = s.expire_untagged_days {
        rules.push(serde_json::json!({
            "rulePriority": rules.len() + 1,
            "description": format!("expire untagged images after {days} days (kforge)"),
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days},
            "action": {"type": "expire"}
        }));
    }
    if let Some(n) = s.keep_images {
        rules.push(serde_json::json!({
            "rulePriority": rules.len() + 1,
            "description": format!("keep the {n} most recent images (kforge)"),
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": n},
            "action": {"type": "expire"}
        }));
    }
    (!rules.is_empty()).then(|| serde_json::json!({ "rules": rules }).to_string())
}

/// Finds or creates `name` and converges the settings that were asked for.
pub async fn ensure_repository(
    ecr: &aws_sdk_ecr::Client,
    account: Option<&str>,
    name: &str,
    settings: &RepositorySettings,
) -> anyhow::Result<Repository> {
    let resource = format!("ECR repository {name}");
    let found = match ecr
        .describe_repositories()
        .set_registry_id(account.map(str::to_string))
        .repository_names(name)
        .send()
        .await
    {
        Ok(out) => out.repositories().first().cloned(),
        Err(e) if sdk_class(&e) == ErrorClass::NotFound => None,
        Err(e) => return Err(aws_err(&resource, "DescribeRepositories")(e).into()),
    };
    let (repo, created) = match found {
        Some(r) => (r, false),
        None => {
            let created = ecr
                .create_repository()
                .set_registry_id(account.map(str::to_string))
                .repository_name(name)
                .image_scanning_configuration(
                    ImageScanningConfiguration::builder()
                        .scan_on_push(settings.scan_on_push.unwrap_or(true))
                        .build(),
                )
                .image_tag_mutability(mutability(settings.immutable_tags.unwrap_or(false)))
                .tags(
                    Tag::builder()
                        .key("kforge.dev/managed-by")
                        .value("kforge")
                        .build()
                        .context("tag")?,
                )
                .send()
                .await;
            match created {
                Ok(out) => (
                    out.repository()
                        .cloned()
                        .context("CreateRepository returned no repository")?,
                    true,
                ),
                // Another push created it between our describe and create.
                Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => {
                    let out = ecr
                        .describe_repositories()
                        .set_registry_id(account.map(str::to_string))
                        .repository_names(name)
                        .send()
                        .await
                        .map_err(aws_err(&resource, "DescribeRepositories"))?;
                    (
                        out.repositories().first().cloned().context("repository vanished")?,
                        false,
                    )
                }
                Err(e) => return Err(aws_err(&resource, "CreateRepository")(e).into()),
            }
        }
    };
    let registry_id = repo.registry_id().unwrap_or_default().to_string();
    let uri = repo.repository_uri().unwrap_or_default();
    let registry_host = uri.split_once('/').map(|(h, _)| h).unwrap_or(uri).to_string();
    let mut updated = Vec::new();
    if !created {
        if let Some(want) = settings.scan_on_push {
            let have = repo
                .image_scanning_configuration()
                .map(|c| c.scan_on_push())
                .unwrap_or(false);
            if have != want {
                ecr.put_image_scanning_configuration()
                    .set_registry_id(account.map(str::to_string))
                    .repository_name(name)
                    .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(want).build())
                    .send()
                    .await
                    .map_err(aws_err(&resource, "PutImageScanningConfiguration"))?;
                updated.push(format!("scan on push: {want}"));
            }
        }
        if let Some(want) = settings.immutable_tags {
            let have = repo.image_tag_mutability() == Some(&ImageTagMutability::Immutable);
            if have != want {
                ecr.put_image_tag_mutability()
                    .set_registry_id(account.map(str::to_string))
                    .repository_name(name)
                    .image_tag_mutability(mutability(want))
                    .send()
                    .await
                    .map_err(aws_err(&resource, "PutImageTagMutability"))?;
                updated.push(format!("immutable tags: {want}"));
            }
        }
    }
    if let Some(policy) = lifecycle_policy(settings) {
        let current = match ecr
            .get_lifecycle_policy()
            .set_registry_id(account.map(str::to_string))
            .repository_name(name)
            .send()
            .await
        {
            Ok(out) => out.lifecycle_policy_text().map(str::to_string),
            Err(e) if sdk_class(&e) == ErrorClass::NotFound => None,
            Err(e) => return Err(aws_err(&resource, "GetLifecyclePolicy")(e).into()),
        };
        let same = current
            .as_deref()
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .is_some_and(|c| Some(c) == serde_json::from_str(&policy).ok());
        if !same {
            ecr.put_lifecycle_policy()
                .set_registry_id(account.map(str::to_string))
                .repository_name(name)
                .lifecycle_policy_text(&policy)
                .send()
                .await
                .map_err(aws_err(&resource, "PutLifecyclePolicy"))?;
            if !created {
                updated.push("lifecycle policy".into());
            }
        }
    }
    Ok(Repository {
        registry_host,
        registry_id,
        name: name.to_string(),
        created,
        updated,
    })
}

fn mutability(immutable: bool) -> ImageTagMutability {
    if immutable {
        ImageTagMutability::Immutable
    } else {
        ImageTagMutability::Mutable
    }
}

/// A cached token, as stored in `ecr-auth.json`.
#[derive(Clone, Serialize, Deserialize)]
struct CachedToken {
    username: String,
    password: String,
    /// Seconds since the epoch.
    expires_at: u64,
}

/// Renew tokens this long before they expire, so a long push never starts with a token about to lapse.
const RENEW_BEFORE_SECS: u64 = 30 * 60;

/// Registry credentials of one ECR registry, from GetAuthorizationToken (whose token opens every registry the
/// principal may use; the registry id only keys the cache).
pub struct EcrCredentials {
    ecr: aws_sdk_ecr::Client,
    registry_id: String,
    region: String,
    cache: Option<PathBuf>,
}

impl EcrCredentials {
    pub fn new(ecr: aws_sdk_ecr::Client, registry_id: &str, region: &str) -> Arc<EcrCredentials> {
        Arc::new(EcrCredentials {
            ecr,
            registry_id: registry_id.to_string(),
            region: region.to_string(),
            cache: cache_file("ecr-auth.json"),
        })
    }

    fn key(&self) -> String {
        format!("{}.{}", self.registry_id, self.region)
    }

    fn cached(&self) -> Option<Credentials> {
        let path = self.cache.as_ref()?;
        let all: BTreeMap<String, CachedToken> = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let t = all.get(&self.key())?;
        (now() + RENEW_BEFORE_SECS < t.expires_at).then(|| Credentials {
            username: t.username.clone(),
            password: t.password.clone(),
        })
    }

    fn store(&self, token: &CachedToken) {
        let Some(path) = &self.cache else { return };
        let mut all: BTreeMap<String, CachedToken> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let n = now();
        all.retain(|_, t| t.expires_at > n);
        all.insert(self.key(), token.clone());
        if let Ok(bytes) = serde_json::to_vec(&all)
            && let Err(e) = crate::fsutil::write_private(path, &bytes)
        {
            tracing::warn!("cannot cache the ECR token in {}: {e}", path.display());
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `base64("AWS:password")` → the pair.
pub fn decode_token(token: &str) -> anyhow::Result<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .context("the ECR authorization token is not base64")?;
    let text = String::from_utf8(raw).context("the ECR authorization token is not text")?;
    let (username, password) = text
        .split_once(':')
        .context("the ECR authorization token is not USER:PASSWORD")?;
    Ok(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

#[async_trait]
impl CredentialSource for EcrCredentials {
    async fn credentials(&self, fresh: bool) -> anyhow::Result<Credentials> {
        if !fresh && let Some(c) = self.cached() {
            return Ok(c);
        }
        let out = self.ecr.get_authorization_token().send().await.map_err(aws_err(
            format!("ECR registry {}", self.registry_id),
            "GetAuthorizationToken",
        ))?;
        let data = out
            .authorization_data()
            .first()
            .context("GetAuthorizationToken returned no authorization data")?;
        let creds = decode_token(data.authorization_token().unwrap_or_default())?;
        let expires_at = data.expires_at().map(|t| t.secs().max(0) as u64).unwrap_or(0);
        self.store(&CachedToken {
            username: creds.username.clone(),
            password: creds.password.clone(),
            expires_at,
        });
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode() {
        let c = decode_token("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu").unwrap();
        assert_eq!(c.username, "AWS");
        assert_eq!(c.password, "123456789012-auth-token");
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn tokens_are_cached_privately_until_shortly_before_they_expire() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ecr = aws_sdk_ecr::Client::from_conf(
            aws_sdk_ecr::Config::builder()
                .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
                .region(aws_sdk_ecr::config::Region::new("us-east-1"))
                .build(),
        );
        let creds = EcrCredentials {
            ecr,
            registry_id: "123456789012".into(),
            region: "us-east-1".into(),
            cache: Some(dir.path().join("ecr-auth.json")),
        };
        assert!(creds.cached().is_none());
        creds.store(&CachedToken {
            username: "AWS".into(),
            password: "secret".into(),
            expires_at: now() + 12 * 3600,
        });
        assert_eq!(creds.cached().unwrap().password, "secret");
        let mode = std::fs::metadata(dir.path().join("ecr-auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Within the renewal margin the cached token is not used any more.
        creds.store(&CachedToken {
            username: "AWS".into(),
            password: "old".into(),
            expires_at: now() + 60,
        });
        assert!(creds.cached().is_none());
    }

    #[test]
    fn lifecycle_rules_follow_the_flags() {
        assert_eq!(lifecycle_policy(&RepositorySettings::default()), None);
        let p: serde_json::Value = serde_json::from_str(
            &lifecycle_policy(&RepositorySettings {
                keep_images: Some(30),
                expire_untagged_days: Some(7),
                ..Default::default()
            })
            .unwrap(),
        )
        .unwrap();
        let rules = p["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["selection"]["tagStatus"], "untagged");
        assert_eq!(rules[0]["selection"]["countNumber"], 7);
        assert_eq!(rules[1]["rulePriority"], 2);
        assert_eq!(rules[1]["selection"]["countType"], "imageCountMoreThan");
    }
}
