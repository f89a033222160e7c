//! etcd backups in the state store: `clusters/NAME/backups/ID.db` (the snapshot) beside `ID.json` (what it is and
//! its sha256), private as the PKI is: files 0600 in a 0700 directory locally, server-side encrypted in S3.

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::StateStore;
use crate::aws::aws_err;

/// What the store keeps about one backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// `YYYYMMDDTHHMMSSZ`, the time it was taken (sorts as it was taken).
    pub id: String,
    pub cluster: String,
    pub created_at: String,
    /// The etcd member it was taken from.
    pub member: String,
    /// sha256 of the snapshot, hex.
    pub sha256: String,
    pub size: u64,
    pub kubernetes_version: String,
    pub kforge_version: String,
}

/// A backup ID for now (second resolution, UTC).
pub fn new_backup_id() -> String {
    let now = super::now(); // 2026-12-02T10:15:00Z
    now.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

/// Whether `id` is a backup ID kforge would have made (it names a key: nothing else may reach the store).
pub fn is_backup_id(id: &str) -> bool {
    id.len() == 16
        && id.chars().enumerate().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == 'Z',
            _ => c.is_ascii_digit(),
        })
}

impl StateStore {
    fn backup_key(&self, cluster: &str, file: &str) -> String {
        self.key(cluster, &format!("backups/{file}"))
    }

    /// Writes the snapshot, then its record (a backup without a record is not listed).
    pub async fn put_backup(&self, record: &BackupRecord, snapshot: &[u8]) -> anyhow::Result<()> {
        self.write_private(
            &self.backup_key(&record.cluster, &format!("{}.db", record.id)),
            snapshot,
        )
        .await?;
        self.write_private(
            &self.backup_key(&record.cluster, &format!("{}.json", record.id)),
            &serde_json::to_vec_pretty(record)?,
        )
        .await
    }

    /// The cluster's backups, oldest first.
    pub async fn list_backups(&self, cluster: &str) -> anyhow::Result<Vec<BackupRecord>> {
        let mut out = Vec::new();
        for name in self.backup_files(cluster).await? {
            let Some(id) = name.strip_suffix(".json") else { continue };
            if !is_backup_id(id) {
                continue;
            }
            if let Some(bytes) = self.read(&self.backup_key(cluster, &name)).await? {
                out.push(serde_json::from_slice(&bytes).map_err(|e| {
                    self.store_error(
                        format!("clusters/{cluster}/backups/{name} is not a kforge backup record: {e}"),
                        "remove it and its .db file",
                    )
                })?);
            }
        }
        out.sort_by(|a: &BackupRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A backup's record and snapshot; `None` when there is no such backup.
    pub async fn get_backup(&self, cluster: &str, id: &str) -> anyhow::Result<Option<(BackupRecord, Vec<u8>)>> {
        if !is_backup_id(id) {
            return Ok(None);
        }
        let Some(meta) = self.read(&self.backup_key(cluster, &format!("{id}.json"))).await? else {
            return Ok(None);
        };
        let record: BackupRecord = serde_json::from_slice(&meta)?;
        let snapshot = self
            .read(&self.backup_key(cluster, &format!("{id}.db")))
            .await?
            .ok_or_else(|| {
                self.store_error(
                    format!("backup {id} of cluster {cluster} has a record but no snapshot"),
                    "take a new backup; this one cannot be restored",
                )
            })?;
        Ok(Some((record, snapshot)))
    }

    /// Removes every backup of the cluster (when the cluster is deleted: its PKI goes too, and a snapshot is
    /// useless without it).
    pub(super) async fn remove_backups(&self, cluster: &str) -> anyhow::Result<()> {
        for name in self.backup_files(cluster).await? {
            self.delete(&self.backup_key(cluster, &name)).await?;
        }
        if let StateStore::Local { root } = self {
            let _ = std::fs::remove_dir(root.join(self.key(cluster, "backups")));
        }
        Ok(())
    }

    /// The file names under the cluster's `backups/`.
    async fn backup_files(&self, cluster: &str) -> anyhow::Result<Vec<String>> {
        self.names_in(&self.key(cluster, "backups")).await
    }

    /// Writes a secret: 0600 locally (as every file of the store), server-side encrypted in S3.
    async fn write_private(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            StateStore::Local { .. } => self.write(key, bytes).await,
            StateStore::S3 { aws, bucket, .. } => {
                aws.s3()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
                    .body(ByteStream::from(bytes.to_vec()))
                    .send()
                    .await
                    .map_err(aws_err(format!("s3://{bucket}/{key}"), "PutObject"))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn backups_are_private_listed_in_order_and_removed_with_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Local {
            root: dir.path().join("state"),
        };
        for id in ["20261202T101500Z", "20261201T090000Z"] {
            let record = BackupRecord {
                id: id.into(),
                cluster: "lab".into(),
                created_at: "2026-12-02T10:15:00Z".into(),
                member: "master-1".into(),
                sha256: "ab".repeat(32),
                size: 3,
                kubernetes_version: "1.34".into(),
                kforge_version: "0.1.0".into(),
            };
            store.put_backup(&record, b"db!").await.unwrap();
        }
        let listed = store.list_backups("lab").await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["20261201T090000Z", "20261202T101500Z"]);
        let snapshot = dir.path().join("state/clusters/lab/backups/20261202T101500Z.db");
        assert_eq!(
            std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (record, bytes) = store.get_backup("lab", "20261202T101500Z").await.unwrap().unwrap();
        assert_eq!((record.member.as_str(), bytes.as_slice()), ("master-1", &b"db!"[..]));
        assert!(store.get_backup("lab", "../../etc/passwd").await.unwrap().is_none());
        assert!(store.get_backup("lab", "20261203T000000Z").await.unwrap().is_none());
        store.remove_backups("lab").await.unwrap();
        assert!(store.list_backups("lab").await.unwrap().is_empty());
    }

    #[test]
    fn backup_ids_are_timestamps() {
        let id = new_backup_id();
        assert!(is_backup_id(&id), "{id}");
        assert!(!is_backup_id("20261202T1015000"));
        assert!(!is_backup_id("../x"));
    }
}
