//! The state store: the applied spec and the outputs of each cluster, plus a lock so two runs never reconcile one
//! cluster at once. Local by default (`~/.kforge`, or `KFORGE_STATE`; dirs 0700, files 0600), `s3://bucket/prefix`
//! for teams, where the lock is an object created with `If-None-Match: *` (S3's conditional write).
//!
//! The cloud stays the source of truth for what exists (resources are found by tags); the store is what lets
//! `get clusters` answer without scanning every region, and what a later run reads outputs from.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

mod backups;

pub use backups::{BackupRecord, is_backup_id, new_backup_id};

use crate::aws::{Aws, aws_err};
use crate::engine::{Outputs, Phase};
use crate::spec::{ClusterSpec, Provider};

/// What the store keeps of one cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub name: String,
    pub provider: Provider,
    pub region: Option<String>,
    pub kubernetes_version: String,
    /// Phases whose last apply succeeded.
    pub phases: Vec<Phase>,
    /// `applied`, or `failed` when the last run ended in errors.
    pub status: String,
    /// The fully defaulted spec last applied.
    pub spec: ClusterSpec,
    /// Outputs per logical resource id.
    pub outputs: BTreeMap<String, Outputs>,
    pub created_at: String,
    pub updated_at: String,
    pub kforge_version: String,
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An object as read, with what identifies that version of it.
struct Versioned {
    bytes: Vec<u8>,
    /// S3's ETag (local files are compared by their bytes).
    etag: Option<String>,
}

/// Who holds a cluster's lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LockInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub acquired_at: String,
    /// The run generation creates are made under (their idempotency tokens derive from it): a run's own id, or
    /// the generation of the crashed run whose lock it took over, so that run's in-flight creates are answered,
    /// not repeated. Absent in locks written before it existed (their `id` stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl LockInfo {
    fn mine(command: &str) -> Self {
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        LockInfo {
            id: format!("{pid}-{nanos:x}"),
            host: hostname(),
            pid,
            command: command.into(),
            acquired_at: now(),
            generation: None,
        }
    }

    /// The generation this lock's run creates under (see [`LockInfo::generation`]).
    fn generation(&self) -> &str {
        self.generation.as_deref().unwrap_or(&self.id)
    }

    /// Held by a process of this machine that no longer exists (a run killed with SIGKILL).
    fn is_stale(&self) -> bool {
        self.host == hostname() && self.pid != std::process::id() && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cluster {cluster} is locked by `{}` (pid {} on {}, since {}) in {location}\n  hint: wait for that run to finish; if it died, re-run with --force-unlock",
        .holder.command, .holder.pid, .holder.host, .holder.acquired_at
    )]
    Locked {
        cluster: String,
        location: String,
        holder: Box<LockInfo>,
    },
    #[error("state store {location}: {message}\n  hint: {hint}")]
    Store {
        location: String,
        message: String,
        hint: String,
    },
}

/// A cluster's PKI directory, open for `bootstrap::pki::Pki::ensure`.
pub struct PkiDir {
    pub path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    /// What an S3 store held when opened (to write back only what changed).
    loaded: BTreeMap<String, Vec<u8>>,
}

/// Where state lives.
#[derive(Clone)]
pub enum StateStore {
    Local {
        root: PathBuf,
    },
    S3 {
        aws: Arc<Aws>,
        bucket: String,
        prefix: String,
    },
}

impl StateStore {
    /// The store named by `--state`/`KFORGE_STATE`, or `~/.kforge`.
    pub fn from_location(
        location: Option<&str>,
        aws_for_s3: impl FnOnce() -> Arc<Aws>,
    ) -> Result<StateStore, StateError> {
        match location {
            Some(url) if url.starts_with("s3://") => {
                let rest = &url["s3://".len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StateError::Store {
                        location: url.into(),
                        message: "no bucket in the URL".into(),
                        hint: "write it as s3://BUCKET/PREFIX".into(),
                    });
                }
                Ok(StateStore::S3 {
                    aws: aws_for_s3(),
                    bucket: bucket.into(),
                    prefix: prefix.trim_matches('/').into(),
                })
            }
            Some(path) => Ok(StateStore::Local {
                root: PathBuf::from(path),
            }),
            None => {
                let home = std::env::var_os("HOME").ok_or_else(|| StateError::Store {
                    location: "~/.kforge".into(),
                    message: "HOME is not set".into(),
                    hint: "pass --state DIR or set KFORGE_STATE".into(),
                })?;
                Ok(StateStore::Local {
                    root: PathBuf::from(home).join(".kforge"),
                })
            }
        }
    }

    pub fn location(&self) -> String {
        match self {
            StateStore::Local { root } => root.display().to_string(),
            StateStore::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    fn key(&self, cluster: &str, file: &str) -> String {
        match self {
            StateStore::Local { .. } => format!("clusters/{cluster}/{file}"),
            StateStore::S3 { prefix, .. } if prefix.is_empty() => format!("clusters/{cluster}/{file}"),
            StateStore::S3 { prefix, .. } => format!("{prefix}/clusters/{cluster}/{file}"),
        }
    }

    fn store_error(&self, message: impl Into<String>, hint: &str) -> StateError {
        StateError::Store {
            location: self.location(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub async fn get(&self, cluster: &str) -> anyhow::Result<Option<ClusterRecord>> {
        let Some(bytes) = self.read(&self.key(cluster, "cluster.json")).await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&bytes).map_err(|e| {
            self.store_error(
                format!("clusters/{cluster}/cluster.json is not a kforge record: {e}"),
                "restore it from a backup, or remove it (resources are found by tags, delete still works)",
            )
        })?;
        Ok(Some(record))
    }

    pub async fn put(&self, record: &ClusterRecord) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(record)?;
        self.write(&self.key(&record.name, "cluster.json"), &bytes).await
    }

    /// The cluster's PKI as a local directory (0700, files 0600): in place for a local store; for S3, a private
    /// temporary copy that [`StateStore::save_pki`] writes back (server-side encrypted).
    pub async fn open_pki(&self, cluster: &str) -> anyhow::Result<PkiDir> {
        match self {
            StateStore::Local { root } => {
                let path = root.join(self.key(cluster, "pki"));
                make_private_dirs(root, &path)?;
                Ok(PkiDir {
                    path,
                    _temp: None,
                    loaded: BTreeMap::new(),
                })
            }
            StateStore::S3 { .. } => {
                let temp = tempfile::Builder::new().prefix("kforge-pki-").tempdir()?;
                let path = temp.path().join("pki");
                crate::fsutil::create_private_dir(&path)?;
                let dir = self.key(cluster, "pki");
                let mut loaded = BTreeMap::new();
                for name in self.names_in(&dir).await? {
                    if let Some(bytes) = self.read(&format!("{dir}/{name}")).await? {
                        crate::fsutil::write_private(&path.join(&name), &bytes)?;
                        loaded.insert(name, bytes);
                    }
                }
                Ok(PkiDir {
                    path,
                    _temp: Some(temp),
                    loaded,
                })
            }
        }
    }

    /// Writes back what changed in an S3 store's PKI copy (a local store's PKI is already in place).
    pub async fn save_pki(&self, cluster: &str, dir: &PkiDir) -> anyhow::Result<()> {
        let StateStore::S3 { aws, bucket, .. } = self else {
            return Ok(());
        };
        for entry in std::fs::read_dir(&dir.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let bytes = std::fs::read(entry.path())?;
            if dir.loaded.get(&name) == Some(&bytes) {
                continue;
            }
            let key = format!("{}/{name}", self.key(cluster, "pki"));
            aws.s3()
                .put_object()
                .bucket(bucket)
                .key(&key)
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(aws_err(format!("s3://{bucket}/{key}"), "PutObject"))?;
        }
        Ok(())
    }

    /// Removes the cluster's PKI (on cluster delete: nothing can use it any more).
    async fn remove_pki(&self, cluster: &str) -> anyhow::Result<()> {
        match self {
            StateStore::Local { root } => {
                let path = root.join(self.key(cluster, "pki"));
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self
                        .store_error(
                            format!("cannot remove {}: {e}", path.display()),
                            "check the permissions",
                        )
                        .into()),
                }
            }
            StateStore::S3 { .. } => {
                let dir = self.key(cluster, "pki");
                for name in self.names_in(&dir).await? {
                    self.delete(&format!("{dir}/{name}")).await?;
                }
                Ok(())
            }
        }
    }

    /// The names of the files directly in `dir` (a key without its trailing `/`); none if it does not exist.
    pub(crate) async fn names_in(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        match self {
            StateStore::Local { root } => match std::fs::read_dir(root.join(dir)) {
                Ok(entries) => Ok(entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(self
                    .store_error(format!("cannot list {dir}: {e}"), "check the directory's permissions")
                    .into()),
            },
            StateStore::S3 { aws, bucket, .. } => {
                let prefix = format!("{dir}/");
                let mut names = Vec::new();
                let mut pages = aws
                    .s3()
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(format!("s3://{bucket}/{prefix}"), "ListObjectsV2"))?;
                    names.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key()?.strip_prefix(&prefix).map(str::to_string))
                            .filter(|n| !n.is_empty() && !n.contains('/')),
                    );
                }
                Ok(names)
            }
        }
    }

    pub async fn remove(&self, cluster: &str) -> anyhow::Result<()> {
        self.remove_backups(cluster).await?;
        self.remove_pki(cluster).await?;
        self.delete(&self.key(cluster, "cluster.json")).await?;
        if let StateStore::Local { root } = self {
            let dir = root.join("clusters").join(cluster);
            // The takeover guard holds nothing; a lock that is still there is kept.
            let _ = std::fs::remove_file(dir.join("lock.guard"));
            // Leaves the directory if something else (a lock, PKI of later phases) is still there.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    pub async fn list(&self) -> anyhow::Result<Vec<ClusterRecord>> {
        let names: Vec<String> = match self {
            StateStore::Local { root } => match std::fs::read_dir(root.join("clusters")) {
                Ok(dir) => dir
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(self
                        .store_error(format!("cannot list: {e}"), "check the directory's permissions")
                        .into());
                }
            },
            StateStore::S3 { aws, bucket, .. } => {
                // `PREFIX/clusters/`: the key of a cluster named x, without the x.
                let base = self.key("x", "").trim_end_matches("x/").to_string();
                let mut names = Vec::new();
                let mut pages = aws
                    .s3()
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&base)
                    .delimiter("/")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.location(), "ListObjectsV2"))?;
                    for p in page.common_prefixes() {
                        if let Some(name) = p.prefix().and_then(|p| p.strip_prefix(&base)) {
                            names.push(name.trim_end_matches('/').to_string());
                        }
                    }
                }
                names
            }
        };
        let mut out = Vec::new();
        for n in names {
            if let Some(r) = self.get(&n).await? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Takes the cluster's lock, or says who holds it. A lock left by a dead process of this machine is taken
    /// over; `force` breaks any lock. Taking over is itself atomic: the lock is replaced only if it is still the
    /// one that was judged stale (S3: a write conditional on its ETag; local: compared and replaced under an
    /// exclusive flock of a guard file), so of several runs racing for one stale lock exactly one proceeds and the
    /// others find the winner holding it.
    pub async fn lock(&self, cluster: &str, command: &str, force: bool) -> anyhow::Result<StateLock> {
        let key = self.key(cluster, "lock");
        let mine = LockInfo::mine(command);
        let body = serde_json::to_vec_pretty(&mine)?;
        let taken = |store: &StateStore, held: &LockInfo| StateLock {
            store: store.clone(),
            key: key.clone(),
            id: held.id.clone(),
            generation: held.generation().to_string(),
            released: false,
        };
        for _ in 0..5 {
            if self.create_exclusive(&key, &body).await? {
                return Ok(taken(self, &mine));
            }
            // Gone between the two calls: the next exclusive create decides.
            let Some(current) = self.read_versioned(&key).await? else {
                continue;
            };
            let holder: Option<LockInfo> = serde_json::from_slice(&current.bytes).ok();
            let why = match &holder {
                Some(h) if !force && !h.is_stale() => {
                    return Err(StateError::Locked {
                        cluster: cluster.into(),
                        location: self.location(),
                        holder: Box::new(h.clone()),
                    }
                    .into());
                }
                None if !force => {
                    return Err(self
                        .store_error(
                            format!("the lock of cluster {cluster} is unreadable"),
                            "if no other run is working on this cluster, re-run with --force-unlock",
                        )
                        .into());
                }
                _ if force => "--force-unlock",
                _ => "its process is gone",
            };
            // The crashed run's generation carries over: a create it sent just before dying is then answered
            // to this run instead of made twice (AWS keeps a token's answer for hours).
            let heir = LockInfo {
                generation: holder.as_ref().map(|h| h.generation().to_string()),
                ..mine.clone()
            };
            if self
                .replace_if_unchanged(&key, &current, &serde_json::to_vec_pretty(&heir)?)
                .await?
            {
                let was = holder.map_or("an unreadable lock".to_string(), |h| {
                    format!("the lock of pid {} on {}", h.pid, h.host)
                });
                tracing::warn!("took over {was} of cluster {cluster} ({why})");
                return Ok(taken(self, &heir));
            }
            // Another run changed the lock first: look again.
        }
        Err(self
            .store_error(
                format!("could not take the lock of cluster {cluster}"),
                "another run is racing for it; retry, or use --force-unlock",
            )
            .into())
    }

    /// `key`'s bytes and, on S3, its ETag.
    async fn read_versioned(&self, key: &str) -> anyhow::Result<Option<Versioned>> {
        match self {
            StateStore::Local { .. } => Ok(self.read(key).await?.map(|bytes| Versioned { bytes, etag: None })),
            StateStore::S3 { aws, bucket, .. } => match aws.s3().get_object().bucket(bucket).key(key).send().await {
                Ok(o) => {
                    let etag = o.e_tag().map(str::to_string);
                    Ok(Some(Versioned {
                        bytes: o.body.collect().await?.into_bytes().to_vec(),
                        etag,
                    }))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(aws_err(format!("s3://{bucket}/{key}"), "GetObject")(e).into()),
            },
        }
    }

    /// Writes `bytes` at `key` only if it still holds what `seen` read; `false` when it changed or vanished.
    async fn replace_if_unchanged(&self, key: &str, seen: &Versioned, bytes: &[u8]) -> anyhow::Result<bool> {
        match self {
            StateStore::Local { root } => {
                let path = root.join(key);
                let guard_path = path.with_extension("guard");
                let fail = |e: std::io::Error| {
                    self.store_error(
                        format!("cannot take over {key}: {e}"),
                        "check the directory's permissions",
                    )
                };
                let guard = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&guard_path)
                    .map_err(fail)?;
                // Held until `guard` is dropped: racing takeovers compare and replace one after the other.
                guard.lock().map_err(fail)?;
                match std::fs::read(&path) {
                    Ok(now) if now == seen.bytes => {}
                    Ok(_) => return Ok(false),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(fail(e).into()),
                }
                crate::fsutil::write_private(&path, bytes).map_err(fail)?;
                Ok(true)
            }
            StateStore::S3 { aws, bucket, .. } => {
                let Some(etag) = &seen.etag else {
                    return Ok(false);
                };
                let r = aws
                    .s3()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .if_match(etag)
                    .body(ByteStream::from(bytes.to_vec()))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(true),
                    // 412: the lock changed; 404: it is gone (the next exclusive create decides).
                    Err(e)
                        if e.raw_response()
                            .is_some_and(|r| [404, 412].contains(&r.status().as_u16())) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(aws_err(format!("s3://{bucket}/{key}"), "PutObject")(e).into()),
                }
            }
        }
    }

    async fn read(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            StateStore::Local { root } => match std::fs::read(root.join(key)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self
                    .store_error(format!("cannot read {key}: {e}"), "check the file's permissions")
                    .into()),
            },
            StateStore::S3 { aws, bucket, .. } => {
                let r = aws.s3().get_object().bucket(bucket).key(key).send().await;
                match r {
                    Ok(o) => Ok(Some(o.body.collect().await?.into_bytes().to_vec())),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                    Err(e) => Err(aws_err(format!("s3://{bucket}/{key}"), "GetObject")(e).into()),
                }
            }
        }
    }

    async fn write(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            StateStore::Local { root } => {
                let path = root.join(key);
                make_private_dirs(root, path.parent().expect("key has a directory"))?;
                crate::fsutil::write_private(&path, bytes).map_err(|e| {
                    self.store_error(format!("cannot write {key}: {e}"), "check the directory's permissions")
                })?;
                Ok(())
            }
            StateStore::S3 { aws, bucket, .. } => {
                aws.s3()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(bytes.to_vec()))
                    .send()
                    .await
                    .map_err(aws_err(format!("s3://{bucket}/{key}"), "PutObject"))?;
                Ok(())
            }
        }
    }

    /// Creates `key` only if absent; `false` when it already exists.
    async fn create_exclusive(&self, key: &str, bytes: &[u8]) -> anyhow::Result<bool> {
        match self {
            StateStore::Local { root } => {
                let path = root.join(key);
                make_private_dirs(root, path.parent().expect("key has a directory"))?;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(mut f) => {
                        f.write_all(bytes)?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(self
                        .store_error(format!("cannot create {key}: {e}"), "check the directory's permissions")
                        .into()),
                }
            }
            StateStore::S3 { aws, bucket, .. } => {
                let r = aws
                    .s3()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .if_none_match("*")
                    .body(ByteStream::from(bytes.to_vec()))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(true),
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
                    Err(e) => Err(aws_err(format!("s3://{bucket}/{key}"), "PutObject")(e).into()),
                }
            }
        }
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self {
            StateStore::Local { root } => match std::fs::remove_file(root.join(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self
                    .store_error(format!("cannot remove {key}: {e}"), "check the file's permissions")
                    .into()),
            },
            StateStore::S3 { aws, bucket, .. } => {
                aws.s3()
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(aws_err(format!("s3://{bucket}/{key}"), "DeleteObject"))?;
                Ok(())
            }
        }
    }
}

/// Creates `dir` and any missing parents with mode 0700. Directories that already exist are left as they are:
/// the root may be a directory of the user's (`--state ~/infra`), which is theirs to protect. Only the
/// `clusters/NAME` directories, kforge's own, are made private if an older run left them looser.
fn make_private_dirs(root: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let clusters = root.join("clusters");
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| p.starts_with(&clusters)) {
        let mode = std::fs::metadata(p)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
        }
        d = p.parent();
    }
    Ok(())
}

/// A held cluster lock. Release it explicitly (it needs an async call); a lock dropped unreleased is left for the
/// stale-lock rule or `--force-unlock`.
pub struct StateLock {
    store: StateStore,
    key: String,
    id: String,
    generation: String,
    released: bool,
}

impl StateLock {
    /// The generation this run's creates are made under (see [`LockInfo::generation`]).
    pub fn generation(&self) -> &str {
        &self.generation
    }

    pub async fn release(mut self) -> anyhow::Result<()> {
        self.released = true;
        // Only remove the lock if it is still ours (someone may have broken it with --force-unlock).
        let current: Option<LockInfo> = self
            .store
            .read(&self.key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if current.is_some_and(|c| c.id == self.id) {
            self.store.delete(&self.key).await?;
        }
        Ok(())
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if !self.released {
            tracing::debug!("state lock {} dropped without release", self.key);
        }
    }
}

#[cfg(test)]
mod tests;
