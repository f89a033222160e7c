//! The push itself, in two stages so a failure never leaves a half image behind. Stage: for every blob at once
//! (bounded by `--jobs`), HEAD it and skip it when the repository has it, else try a cross-repository mount from
//! where kforge pushed it before, else stream it in one PATCH (digest checked on the way), retrying with a rewound
//! body and a new session on network failures and 5xx. Commit: only when every blob is staged are the upload
//! sessions completed (PUT with the digest), then the manifests, children first, the tagged one last. A corrupt
//! layer or a dead registry therefore leaves no new blob, manifest or tag visible.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use serde::Serialize;

use super::body::{RequestBody, Streamed};
use super::cache::MountCache;
use super::client::{Registry, RegistryError, Scope};
use super::progress::{BlobOutcome, PushProgress};
use super::source::{Blob, BlobData, Image, short};

/// Where an image goes.
pub struct Destination {
    pub registry: Arc<Registry>,
    pub repository: String,
    /// The tag to set; `None` pushes by digest only.
    pub tag: Option<String>,
}

impl Destination {
    /// `host/repo`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.repository)
    }
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs in flight at once.
    pub jobs: usize,
    /// Tries per blob upload, the first included.
    pub attempts: usize,
    /// First pause between tries; doubles up to 8 s.
    pub first_backoff: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            jobs: 4,
            attempts: 5,
            first_backoff: Duration::from_millis(300),
        }
    }
}

/// What a push did (`-o json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// `host/repo:tag@sha256:…`
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    /// Bytes of the image: manifests, config and layers.
    pub size: u64,
    /// Blob bytes put on the wire, retries included.
    pub bytes_sent: u64,
    /// Blob bytes not sent because the registry had them (or mounted them).
    pub bytes_skipped: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    /// Manifests put (0 when the tag already pointed at this image).
    pub manifests_pushed: usize,
    pub seconds: f64,
}

/// A blob whose bytes are on the registry, waiting to be committed.
enum Staged {
    Present,
    Mounted,
    Uploaded { location: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AttemptError(String, bool);

pub async fn push(
    image: &Image,
    dest: &Destination,
    opts: &PushOptions,
    progress: Arc<dyn PushProgress>,
    mounts: &Mutex<MountCache>,
) -> anyhow::Result<PushReport> {
    let started = Instant::now();
    let name = dest.name();
    dest.registry
        .probe(&Scope::push(&dest.repository))
        .await
        .with_context(|| format!("cannot push to {name}"))?;

    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let staged: Vec<(usize, Result<Staged, anyhow::Error>)> = futures::stream::iter(image.blobs.iter().enumerate())
        .map(|(i, blob)| {
            let progress = progress.clone();
            let sent = sent.clone();
            let candidates = mounts.lock().unwrap_or_else(|e| e.into_inner()).candidates(
                &dest.registry.host,
                &blob.digest,
                &dest.repository,
            );
            async move { (i, stage(blob, dest, opts, progress, sent, candidates).await) }
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;

    let mut failures = Vec::new();
    let mut sessions = Vec::new();
    let (mut present, mut mounted, mut uploaded, mut skipped_bytes) = (0, 0, 0, 0u64);
    for (i, result) in staged {
        let blob = &image.blobs[i];
        match result {
            Ok(Staged::Present) => {
                present += 1;
                skipped_bytes += blob.size;
            }
            Ok(Staged::Mounted) => {
                mounted += 1;
                skipped_bytes += blob.size;
            }
            Ok(Staged::Uploaded { location }) => {
                uploaded += 1;
                sessions.push((blob, location));
            }
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        for (_, location) in &sessions {
            dest.registry.cancel(&dest.repository, location).await;
        }
        let more = failures.len() - 1;
        let first = failures.swap_remove(0);
        return Err(if more > 0 {
            first.context(format!(
                "push to {name} failed ({} more blobs failed); nothing was committed",
                more
            ))
        } else {
            first.context(format!("push to {name} failed; nothing was committed"))
        });
    }

    // Commit phase: every blob's bytes are on the registry and verified.
    let commits: Vec<anyhow::Result<()>> = futures::stream::iter(sessions.iter())
        .map(|(blob, location)| async move { commit(blob, location, dest).await })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    for c in commits {
        c.with_context(|| format!("push to {name} failed while committing blobs; no manifest was pushed"))?;
    }

    let mut manifests_pushed = 0;
    let top = image.top();
    for m in &image.manifests {
        let is_top = std::ptr::eq(m, top);
        let reference = match (&dest.tag, is_top) {
            (Some(tag), true) => tag.clone(),
            _ => m.digest.clone(),
        };
        let existing = dest
            .registry
            .manifest_digest(&dest.repository, &reference)
            .await
            .with_context(|| format!("push to {name}"))?;
        if existing.as_deref() == Some(m.digest.as_str()) {
            continue;
        }
        let returned = dest
            .registry
            .put_manifest(&dest.repository, &reference, &m.media_type, m.bytes.clone())
            .await
            .with_context(|| format!("push of manifest {} to {name}:{reference} failed", short(&m.digest)))?;
        if let Some(d) = returned
            && d != m.digest
        {
            bail!(
                "registry {} stored manifest {} as {d}: it rewrote the manifest, so its digest changed",
                dest.registry.host,
                m.digest
            );
        }
        manifests_pushed += 1;
    }

    {
        let mut cache = mounts.lock().unwrap_or_else(|e| e.into_inner());
        for b in &image.blobs {
            cache.record(&dest.registry.host, &b.digest, &dest.repository);
        }
        if let Err(e) = cache.save() {
            tracing::warn!("cannot save the blob location cache: {e:#}");
        }
    }

    let tag_part = dest.tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
    Ok(PushReport {
        reference: format!("{name}{tag_part}@{}", top.digest),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        size: image.total_size(),
        bytes_sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        bytes_skipped: skipped_bytes,
        blobs_uploaded: uploaded,
        blobs_present: present,
        blobs_mounted: mounted,
        manifests_pushed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn backoff(opts: &PushOptions) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(opts.first_backoff)
        .with_max_delay(Duration::from_secs(8))
        .with_max_times(opts.attempts.saturating_sub(1))
        .with_jitter()
}

fn attempt_error(e: RegistryError) -> AttemptError {
    let transient = e.transient;
    AttemptError(e.message, transient)
}

async fn stage(
    blob: &Blob,
    dest: &Destination,
    opts: &PushOptions,
    progress: Arc<dyn PushProgress>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    candidates: Vec<String>,
) -> anyhow::Result<Staged> {
    let repo = dest.repository.as_str();
    let label = blob.label();
    let exists = (|| async {
        dest.registry
            .blob_exists(repo, &blob.digest)
            .await
            .map_err(attempt_error)
    })
    .retry(backoff(opts))
    .when(|e: &AttemptError| e.1)
    .await
    .with_context(|| format!("{label}: cannot check whether {} has it", dest.name()))?;
    if exists {
        progress.blob_done(blob, &BlobOutcome::Present);
        return Ok(Staged::Present);
    }
    for from in candidates.iter().take(3) {
        match dest.registry.mount(repo, &blob.digest, from).await {
            Ok(None) => {
                progress.blob_done(blob, &BlobOutcome::Mounted(from.clone()));
                return Ok(Staged::Mounted);
            }
            // The registry opened an upload instead (the source repository lost the blob, or mounts are off).
            Ok(Some(location)) => dest.registry.cancel(repo, &location).await,
            Err(e) => tracing::debug!("mount of {} from {from} failed: {e}", blob.digest),
        }
    }

    progress.blob_started(blob);
    let blob_started = Instant::now();
    let label = label.as_str();
    let attempt = || {
        let progress = progress.clone();
        let sent = sent.clone();
        async move {
            progress.blob_restart(blob);
            let location = dest.registry.start_upload(repo).await.map_err(attempt_error)?;
            let outcome = Arc::new(Mutex::new(Streamed::default()));
            let on_sent: super::body::OnSent = {
                let progress = progress.clone();
                let digest = blob.digest.clone();
                Arc::new(move |n| {
                    sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    progress.blob_sent(&digest, n);
                })
            };
            let mut make_body = || match &blob.data {
                BlobData::Memory(bytes) => {
                    on_sent(bytes.len() as u64);
                    RequestBody::bytes(bytes.clone())
                }
                BlobData::File { path, offset } => {
                    RequestBody::file_range(path.clone(), *offset, blob.size, outcome.clone(), on_sent.clone())
                }
            };
            let result = dest
                .registry
                .patch(
                    repo,
                    &location,
                    &mut make_body,
                    blob.size,
                    &format!("upload of {label}"),
                )
                .await;
            let streamed = outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match result {
                Ok(next) => {
                    if let BlobData::File { path, .. } = &blob.data
                        && streamed.digest.as_deref() != Some(blob.digest.as_str())
                    {
                        dest.registry.cancel(repo, &next).await;
                        return Err(AttemptError(
                            format!(
                                "{label} is corrupt in the source: its bytes in {} hash to {}, not to its digest\n  \
                                 hint: the image was modified or damaged on disk; export it again",
                                path.display(),
                                streamed.digest.as_deref().unwrap_or("(unread)")
                            ),
                            false,
                        ));
                    }
                    Ok(next)
                }
                Err(e) => {
                    dest.registry.cancel(repo, &location).await;
                    if let Some(local) = streamed.read_error {
                        return Err(AttemptError(format!("{label}: {local}"), false));
                    }
                    Err(attempt_error(e))
                }
            }
        }
    };
    let attempts = opts.attempts;
    let tries = std::sync::atomic::AtomicUsize::new(1);
    let result = attempt
        .retry(backoff(opts))
        .when(|e: &AttemptError| e.1)
        .notify(|e: &AttemptError, wait: Duration| {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            progress.blob_retry(blob, n, &e.0, wait);
        })
        .await;
    match result {
        Ok(location) => {
            progress.blob_done(blob, &BlobOutcome::Uploaded(blob_started.elapsed()));
            Ok(Staged::Uploaded { location })
        }
        Err(AttemptError(message, transient)) => {
            progress.blob_failed(blob, &message);
            let tried = tries.load(std::sync::atomic::Ordering::Relaxed);
            if transient {
                bail!(
                    "{label} could not be uploaded to {} after {tried} of {attempts} tries: {message}",
                    dest.name()
                )
            }
            bail!("{label} could not be uploaded to {}: {message}", dest.name())
        }
    }
}

async fn commit(blob: &Blob, location: &str, dest: &Destination) -> anyhow::Result<()> {
    let repo = dest.repository.as_str();
    match dest.registry.commit(repo, location, &blob.digest).await {
        Ok(()) => Ok(()),
        // A commit whose answer was lost: the blob is there if it went through.
        Err(e) if dest.registry.blob_exists(repo, &blob.digest).await.unwrap_or(false) => {
            tracing::debug!("commit of {} answered {e}, but the blob is present", blob.digest);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| blob.label()),
    }
}
