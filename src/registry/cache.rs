//! kforge's local cache directory (`KFORGE_CACHE_DIR`, else `$XDG_CACHE_HOME/kforge`, else `~/.cache/kforge`) and
//! the blob-location cache in it: which repositories of a registry kforge has pushed a blob to, so the next push of
//! that blob to another repository can ask for a cross-repository mount instead of sending the bytes again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Blobs remembered per registry before the oldest knowledge is dropped (a few MB of JSON at most).
const MAX_BLOBS_PER_REGISTRY: usize = 20_000;
/// Repositories remembered per blob.
const MAX_REPOS_PER_BLOB: usize = 8;

pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KFORGE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("kforge"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kforge"))
}

/// Creates the cache directory (0700) and returns the path of `name` in it.
pub fn cache_file(name: &str) -> Option<PathBuf> {
    let dir = cache_dir()?;
    if std::fs::create_dir_all(&dir).is_err() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    Some(dir.join(name))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    /// registry host → blob digest → repositories, most recent last.
    registries: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default)]
pub struct MountCache {
    path: Option<PathBuf>,
    doc: Doc,
    dirty: bool,
}

impl MountCache {
    /// The cache at its usual place; empty (and never saved) when there is no cache directory. A damaged file is
    /// treated as empty: it is only a hint.
    pub fn load() -> MountCache {
        Self::at(cache_file("blob-locations.json"))
    }

    pub fn at(path: Option<PathBuf>) -> MountCache {
        let doc = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        MountCache {
            path,
            doc,
            dirty: false,
        }
    }

    /// Other repositories of `registry` known to hold `digest`, most recent first.
    pub fn candidates(&self, registry: &str, digest: &str, except: &str) -> Vec<String> {
        self.doc
            .registries
            .get(registry)
            .and_then(|blobs| blobs.get(digest))
            .map(|repos| repos.iter().rev().filter(|r| *r != except).cloned().collect())
            .unwrap_or_default()
    }

    pub fn record(&mut self, registry: &str, digest: &str, repo: &str) {
        let blobs = self.doc.registries.entry(registry.to_string()).or_default();
        if blobs.len() >= MAX_BLOBS_PER_REGISTRY && !blobs.contains_key(digest) {
            blobs.clear();
        }
        let repos = blobs.entry(digest.to_string()).or_default();
        if repos.last().map(String::as_str) == Some(repo) {
            return;
        }
        repos.retain(|r| r != repo);
        repos.push(repo.to_string());
        if repos.len() > MAX_REPOS_PER_BLOB {
            repos.remove(0);
        }
        self.dirty = true;
    }

    pub fn save(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            crate::fsutil::write_private(path, &serde_json::to_vec(&self.doc)?)?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_repositories_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut c = MountCache::at(Some(path.clone()));
        c.record("reg:5000", "sha256:a", "one");
        c.record("reg:5000", "sha256:a", "two");
        c.save().unwrap();
        let c = MountCache::at(Some(path.clone()));
        assert_eq!(c.candidates("reg:5000", "sha256:a", "three"), vec!["two", "one"]);
        assert_eq!(c.candidates("reg:5000", "sha256:a", "two"), vec!["one"]);
        assert!(c.candidates("other", "sha256:a", "x").is_empty());
        std::fs::write(&path, "not json").unwrap();
        assert!(
            MountCache::at(Some(path))
                .candidates("reg:5000", "sha256:a", "x")
                .is_empty()
        );
    }
}
