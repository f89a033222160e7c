//! `kforge push image`: daemon-free image pushes to ECR and any OCI registry. `reference` parses what the user
//! names, `source` (and `daemon`) turn a layout, archive or daemon image into blobs on disk plus manifests, `push`
//! stages and commits them through `client` (the distribution API with its auth), `ecr` adds repository settings
//! and token auth for ECR. Also the building block `kforge deploy` uses for local images.

pub mod body;
pub mod cache;
pub mod client;
pub mod daemon;
pub mod ecr;
pub mod progress;
pub mod push;
pub mod reference;
pub mod source;

use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;

pub use client::Credentials;
pub use push::{Destination, PushOptions, PushReport};
pub use reference::{EcrHost, ImageRef, Source, Target};
pub use source::Image;

use crate::aws::Aws;

/// Reads the image a source names (blocking file work runs off the async threads).
pub async fn load_source(source: &Source) -> anyhow::Result<Image> {
    match source.clone() {
        Source::OciLayout { dir, tag } => {
            tokio::task::spawn_blocking(move || source::load_oci_dir(&dir, tag.as_deref())).await?
        }
        Source::DockerArchive { file, image } => {
            let name = source.to_string();
            tokio::task::spawn_blocking(move || source::load_docker_archive(&file, image.as_deref(), name)).await?
        }
        Source::DockerDaemon { name } => daemon::load(&name).await,
    }
}

/// The tag to push under: the target's, else the source's, else `latest` (as `docker push` does).
pub fn effective_tag(target_tag: Option<&str>, image: &Image) -> String {
    target_tag
        .map(str::to_string)
        .or_else(|| image.tag.clone())
        .unwrap_or_else(|| "latest".into())
}

/// A plain registry: `https://HOST` (or `http://` with `insecure`), with the given credentials, else the ones
/// `docker login` stored for the host.
pub fn registry_destination(
    target: &ImageRef,
    tag: String,
    insecure: bool,
    credentials: Option<Credentials>,
) -> anyhow::Result<Destination> {
    let scheme = if insecure { "http" } else { "https" };
    let credentials = credentials.or_else(|| docker_config_credentials(&target.registry));
    let registry = client::Registry::new(&format!("{scheme}://{}", target.registry), credentials, None)?;
    Ok(Destination {
        registry: Arc::new(registry),
        repository: target.repository.clone(),
        tag: Some(tag),
    })
}

/// An ECR repository of `account` (default: the one `aws` runs as), created or converged first; `endpoint` overrides the registry
/// URL (tests, private endpoints).
pub async fn ecr_destination(
    aws: &Aws,
    repository: &str,
    account: Option<&str>,
    tag: String,
    settings: &ecr::RepositorySettings,
    endpoint: Option<&str>,
) -> anyhow::Result<(Destination, ecr::Repository)> {
    let repo = ecr::ensure_repository(aws.ecr(), account, repository, settings).await?;
    let source = ecr::EcrCredentials::new(aws.ecr().clone(), &repo.registry_id, &aws.region());
    let base = match endpoint {
        Some(url) => url.to_string(),
        None => format!("https://{}", repo.registry_host),
    };
    let registry = client::Registry::new(&base, None, Some(source))?;
    Ok((
        Destination {
            registry: Arc::new(registry),
            repository: repository.to_string(),
            tag: Some(tag),
        },
        repo,
    ))
}

/// `auths.HOST` of the docker CLI's config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
pub fn docker_config_credentials(host: &str) -> Option<Credentials> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => std::path::PathBuf::from(d).join("config.json"),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let entry = auths
        .get(host)
        .or_else(|| auths.get(&format!("https://{host}")))
        .or_else(|| auths.get(&format!("http://{host}")))?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let raw = base64::engine::general_purpose::STANDARD.decode(auth).ok()?;
        let (u, p) = String::from_utf8(raw)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))?;
        return Some(Credentials {
            username: u,
            password: p,
        });
    }
    Some(Credentials {
        username: entry.get("username")?.as_str()?.to_string(),
        password: entry.get("password")?.as_str()?.to_string(),
    })
}

/// Pushes `image` to `dest` with the console's progress and the on-disk mount cache.
pub async fn push_image(
    image: &Image,
    dest: &Destination,
    opts: &PushOptions,
    quiet: bool,
) -> anyhow::Result<PushReport> {
    let progress = progress::console(quiet);
    let mounts = std::sync::Mutex::new(cache::MountCache::load());
    push::push(image, dest, opts, progress, &mounts)
        .await
        .with_context(|| format!("cannot push {}", image.source))
}
