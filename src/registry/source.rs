//! Image sources read into one shape: the blobs to push (where their bytes lie on disk, never in memory for layers)
//! and the manifests in push order (children before the index that names them). Everything that can be checked
//! without reading layers is checked here, before any network call: the layout parses, every blob is present with
//! the size its descriptor says, and manifests and configs hash to their digests. Layer digests are verified while
//! the layers stream (see `upload`), so a large layer is read once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, DigestAlgorithm};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Manifests, indexes and configs are read into memory; anything larger is not one.
const SMALL_LIMIT: u64 = 32 << 20;

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobData {
    /// Already read and verified (configs).
    Memory(Bytes),
    /// `size` bytes of `path` starting at `offset` (a layout file, or a member of a tar).
    File { path: PathBuf, offset: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Config,
    Layer,
}

#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:<hex>`, validated.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub kind: BlobKind,
    pub data: BlobData,
}

impl Blob {
    /// `layer sha256:0123456789ab (12.0 MiB)`: how errors and progress name a blob.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        };
        format!("{kind} {} ({})", short(&self.digest), human_bytes(self.size))
    }
}

/// A manifest or index, pushed byte for byte so its digest is kept.
#[derive(Debug, Clone)]
pub struct ManifestBlob {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

/// An image ready to push.
#[derive(Debug)]
pub struct Image {
    /// The source as the user wrote it, for messages.
    pub source: String,
    /// The tag the source names the image by, used when the target gives none.
    pub tag: Option<String>,
    /// Unique by digest, in first-seen order.
    pub blobs: Vec<Blob>,
    /// Push order: children first; the last one is what the tag points at.
    pub manifests: Vec<ManifestBlob>,
    /// A spooled daemon export, removed when the image is dropped.
    pub(crate) _spool: Option<tempfile::TempPath>,
}

impl Image {
    pub fn top(&self) -> &ManifestBlob {
        self.manifests.last().expect("an image has at least one manifest")
    }

    /// Bytes of every blob and manifest.
    pub fn total_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum::<u64>()
            + self.manifests.iter().map(|m| m.bytes.len() as u64).sum::<u64>()
    }
}

/// `sha256:0123456789ab`.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest kforge can verify and use as a file name: `sha256:` and 64 lower-case hex digits.
fn sha256_of(digest: &Digest) -> anyhow::Result<&str> {
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        bail!("blob {digest}: only sha256 digests are supported");
    }
    Ok(digest.digest())
}

/// Where the files of an OCI layout live: a directory, or members of a tar.
trait Store {
    /// `oci:DIR` or `docker-archive:FILE`.
    fn name(&self) -> String;
    /// The file, offset and length of the member at `path` (relative to the layout root), if present.
    fn locate(&self, path: &str) -> anyhow::Result<Option<(PathBuf, u64, u64)>>;
}

struct DirStore {
    root: PathBuf,
}

impl Store for DirStore {
    fn name(&self) -> String {
        format!("oci:{}", self.root.display())
    }

    fn locate(&self, path: &str) -> anyhow::Result<Option<(PathBuf, u64, u64)>> {
        let full = self.root.join(path);
        match std::fs::metadata(&full) {
            Ok(m) if m.is_file() => Ok(Some((full, 0, m.len()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", full.display())),
        }
    }
}

/// The regular members of a tar, by normalised path, with links resolved.
struct TarStore {
    file: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

impl TarStore {
    fn open(file: &Path) -> anyhow::Result<TarStore> {
        let f = File::open(file).with_context(|| format!("cannot open docker-archive {}", file.display()))?;
        let file_len = f.metadata()?.len();
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let truncated = || format!("docker-archive {} is truncated or not a tar file", file.display());
        for entry in archive.entries_with_seek().with_context(truncated)? {
            let entry = entry.with_context(truncated)?;
            let path = normalise(&entry.path().with_context(truncated)?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let (offset, size) = (entry.raw_file_position(), entry.size());
                if offset + size > file_len {
                    bail!(
                        "docker-archive {} is truncated: member {path} needs bytes {offset}..{} but the file ends at \
                         {file_len}",
                        file.display(),
                        offset + size
                    );
                }
                members.insert(path, (offset, size));
            } else if (kind.is_symlink() || kind.is_hard_link())
                && let Some(target) = entry.link_name().with_context(truncated)?
            {
                let target = target.to_string_lossy().to_string();
                // Symlinks are relative to their own directory, hard links to the archive root.
                let resolved = if kind.is_symlink() && !target.starts_with('/') {
                    let dir = Path::new(&path).parent().map(|p| p.to_string_lossy().to_string());
                    normalise(&format!("{}/{target}", dir.unwrap_or_default()))
                } else {
                    normalise(&target)
                };
                links.push((path, resolved));
            }
        }
        for (path, target) in links {
            if let Some(&m) = members.get(&target) {
                members.insert(path, m);
            }
        }
        Ok(TarStore {
            file: file.to_path_buf(),
            members,
        })
    }

    fn read_member(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some((file, offset, len)) = self.locate(path)? else {
            return Ok(None);
        };
        if len > SMALL_LIMIT {
            bail!(
                "{}: {path} is {} bytes, too large for a metadata file",
                self.name(),
                len
            );
        }
        read_range(&file, offset, len).map(Some)
    }
}

impl Store for TarStore {
    fn name(&self) -> String {
        format!("docker-archive:{}", self.file.display())
    }

    fn locate(&self, path: &str) -> anyhow::Result<Option<(PathBuf, u64, u64)>> {
        Ok(self
            .members
            .get(&normalise(path))
            .map(|&(offset, len)| (self.file.clone(), offset, len)))
    }
}

/// `./a/../b//c` → `b/c`.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn read_range(path: &Path, offset: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        bail!("{} ends before the {len} bytes at offset {offset}", path.display());
    }
    Ok(buf)
}

/// Reads a small blob (manifest, index, config) and checks its size and digest.
fn read_verified(store: &dyn Store, desc: &Descriptor, what: &str) -> anyhow::Result<Bytes> {
    let digest = desc.digest();
    let hex = sha256_of(digest)?;
    let (file, offset, len) = locate_blob(store, digest, hex, desc.size(), what)?;
    if len > SMALL_LIMIT {
        bail!(
            "{what} {digest} in {} is {len} bytes: too large for a {what}",
            store.name()
        );
    }
    let bytes = read_range(&file, offset, len)?;
    let actual = sha256_digest(&bytes);
    if actual != digest.to_string() {
        bail!(
            "{what} {digest} in {} is corrupt: its content hashes to {actual}\n  hint: the layout was modified or \
             damaged; re-export the image",
            store.name()
        );
    }
    Ok(Bytes::from(bytes))
}

fn locate_blob(
    store: &dyn Store,
    digest: &Digest,
    hex: &str,
    size: u64,
    what: &str,
) -> anyhow::Result<(PathBuf, u64, u64)> {
    let path = format!("blobs/sha256/{hex}");
    let Some((file, offset, len)) = store.locate(&path)? else {
        bail!("{what} {digest} is missing from {} ({path})", store.name());
    };
    if len != size {
        bail!(
            "{what} {digest} in {} is {len} bytes but its descriptor says {size}\n  hint: the layout is truncated or \
             damaged; re-export the image",
            store.name()
        );
    }
    Ok((file, offset, len))
}

/// The fields of a manifest or index kforge follows.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Collects blobs and manifests while walking an image from its top descriptor.
struct Walk<'a> {
    store: &'a dyn Store,
    blobs: Vec<Blob>,
    seen: HashMap<String, usize>,
    manifests: Vec<ManifestBlob>,
}

impl Walk<'_> {
    fn manifest(&mut self, desc: &Descriptor, depth: usize) -> anyhow::Result<()> {
        if depth > 4 {
            bail!("{}: indexes nest too deeply", self.store.name());
        }
        let bytes = read_verified(self.store, desc, "manifest")?;
        let doc: ManifestDoc = serde_json::from_slice(&bytes)
            .with_context(|| format!("manifest {} in {} is not valid JSON", desc.digest(), self.store.name()))?;
        let media_type = doc.media_type.clone().unwrap_or_else(|| desc.media_type().to_string());
        match media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                for child in doc.manifests.iter().flatten() {
                    if !self.manifests.iter().any(|m| m.digest == child.digest().to_string()) {
                        self.manifest(child, depth + 1)?;
                    }
                }
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = doc
                    .config
                    .as_ref()
                    .with_context(|| format!("manifest {} in {} has no config", desc.digest(), self.store.name()))?;
                let data = read_verified(self.store, config, "config")?;
                self.add(config, BlobKind::Config, BlobData::Memory(data));
                for layer in &doc.layers {
                    // Foreign layers (Windows base images) are fetched from their URLs, never pushed.
                    let media_type = layer.media_type().to_string();
                    let foreign = media_type.contains("foreign") || media_type.contains("nondistributable");
                    if foreign && layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    let hex = sha256_of(layer.digest())?;
                    let (path, offset, _) = locate_blob(self.store, layer.digest(), hex, layer.size(), "layer")?;
                    self.add(layer, BlobKind::Layer, BlobData::File { path, offset });
                }
            }
            other => bail!(
                "manifest {} in {} has media type {other}, which kforge cannot push (OCI or Docker v2 images only)",
                desc.digest(),
                self.store.name()
            ),
        }
        self.manifests.push(ManifestBlob {
            digest: desc.digest().to_string(),
            media_type,
            bytes,
        });
        Ok(())
    }

    fn add(&mut self, desc: &Descriptor, kind: BlobKind, data: BlobData) {
        let digest = desc.digest().to_string();
        if self.seen.contains_key(&digest) {
            return;
        }
        self.seen.insert(digest.clone(), self.blobs.len());
        self.blobs.push(Blob {
            digest,
            size: desc.size(),
            media_type: desc.media_type().to_string(),
            kind,
            data,
        });
    }
}

/// Reads an OCI layout (a directory, or the OCI part of a `docker save` tar) and picks the image `select` names.
fn load_oci(store: &dyn Store, select: Option<&str>, source: String) -> anyhow::Result<Image> {
    let Some((file, offset, len)) = store.locate("index.json")? else {
        bail!("{} is not an OCI image layout: index.json is missing", store.name());
    };
    let index: IndexDoc = serde_json::from_slice(&read_range(&file, offset, len.min(SMALL_LIMIT))?)
        .with_context(|| format!("{}: index.json is not a valid image index", store.name()))?;
    let tag_of = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    let chosen: Vec<&Descriptor> = match select {
        Some(want) => index
            .manifests
            .iter()
            .filter(|d| {
                let ann = d.annotations().as_ref();
                ann.and_then(|a| a.get(REF_NAME)).is_some_and(|t| t == want)
                    || ann
                        .and_then(|a| a.get(CONTAINERD_NAME))
                        .is_some_and(|n| n == want || n.ends_with(&format!("/{want}")))
            })
            .collect(),
        None => index.manifests.iter().collect(),
    };
    let top = match chosen.as_slice() {
        [one] => *one,
        [] if select.is_some() => bail!(
            "{} has no image tagged {}; it has: {}",
            store.name(),
            select.unwrap_or_default(),
            tags_of(&index.manifests)
        ),
        [] => bail!("{} holds no image", store.name()),
        _ => bail!(
            "{} holds several images; name one as {}:TAG (tags: {})",
            store.name(),
            source,
            tags_of(&index.manifests)
        ),
    };
    let mut walk = Walk {
        store,
        blobs: Vec::new(),
        seen: HashMap::new(),
        manifests: Vec::new(),
    };
    walk.manifest(top, 0)?;
    let tag = tag_of(top)
        .filter(|t| super::reference::valid_tag(t))
        .or_else(|| select.and_then(tag_of_name));
    Ok(Image {
        source,
        tag,
        blobs: walk.blobs,
        manifests: walk.manifests,
        _spool: None,
    })
}

fn tags_of(descs: &[Descriptor]) -> String {
    let tags: Vec<String> = descs
        .iter()
        .filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned())
        .collect();
    if tags.is_empty() {
        "none named".into()
    } else {
        tags.join(", ")
    }
}

/// A name as Docker means it: `app:v1` is `docker.io/library/app:v1`, `team/app:v1` is `docker.io/team/app:v1`.
fn docker_name(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    if !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost") {
        return name.to_string();
    }
    if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{name}")
    }
}

/// The tag of `name:tag` (a colon after the last slash).
pub fn tag_of_name(name: &str) -> Option<String> {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map(|(_, t)| t.to_string())
}

pub fn load_oci_dir(dir: &Path, tag: Option<&str>) -> anyhow::Result<Image> {
    let store = DirStore {
        root: dir.to_path_buf(),
    };
    let Some((file, _, _)) = store.locate("oci-layout")? else {
        bail!(
            "{} is not an OCI image layout (no oci-layout file)\n  hint: create one with `skopeo copy ... oci:DIR:TAG` \
             or `docker buildx build --output type=oci,tar=false,dest=DIR`",
            dir.display()
        );
    };
    let header: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)
        .with_context(|| format!("{}: oci-layout is not JSON", dir.display()))?;
    if header.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        bail!(
            "{}: unsupported OCI layout version {}",
            dir.display(),
            header["imageLayoutVersion"]
        );
    }
    let source = format!("oci:{}", dir.display());
    load_oci(&store, tag, source)
}

/// The `manifest.json` entries of a `docker save` archive.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Reads a `docker save` archive: its OCI layout when it has one (Docker 25 and later), else the classic format,
/// for which kforge writes an OCI manifest over the archive's config and layers.
pub fn load_docker_archive(file: &Path, select: Option<&str>, source: String) -> anyhow::Result<Image> {
    let store = TarStore::open(file)?;
    if store.members.contains_key("index.json") && store.members.contains_key("oci-layout") {
        return load_oci(&store, select, source);
    }
    let manifest = store.read_member("manifest.json")?.with_context(|| {
        format!(
            "docker-archive {} has no manifest.json: is it a `docker save` archive?",
            file.display()
        )
    })?;
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&manifest)
        .with_context(|| format!("docker-archive {}: manifest.json is not valid", file.display()))?;
    let all_tags = || {
        entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<&ArchiveEntry> = match select {
        Some(want) => {
            let want_tagged = if tag_of_name(want).is_some() {
                want.to_string()
            } else {
                format!("{want}:latest")
            };
            let want = docker_name(&want_tagged);
            entries
                .iter()
                .filter(|e| e.repo_tags.iter().flatten().any(|t| docker_name(t) == want))
                .collect()
        }
        None => entries.iter().collect(),
    };
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] if select.is_some() => bail!(
            "docker-archive {} has no image {}; it has: {}",
            file.display(),
            select.unwrap_or_default(),
            all_tags()
        ),
        [] => bail!("docker-archive {} holds no image", file.display()),
        _ => bail!(
            "docker-archive {} holds several images; name one as docker-archive:{}:NAME:TAG (images: {})",
            file.display(),
            file.display(),
            all_tags()
        ),
    };
    let config = store.read_member(&entry.config)?.with_context(|| {
        format!(
            "docker-archive {}: the config {} is missing",
            file.display(),
            entry.config
        )
    })?;
    let config_doc: ConfigDoc = serde_json::from_slice(&config).with_context(|| {
        format!(
            "docker-archive {}: the config {} is not valid",
            file.display(),
            entry.config
        )
    })?;
    if config_doc.rootfs.diff_ids.len() != entry.layers.len() {
        bail!(
            "docker-archive {}: the config lists {} layers but manifest.json {}",
            file.display(),
            config_doc.rootfs.diff_ids.len(),
            entry.layers.len()
        );
    }
    let config_digest = sha256_digest(&config);
    let mut blobs = vec![Blob {
        digest: config_digest.clone(),
        size: config.len() as u64,
        media_type: OCI_CONFIG.into(),
        kind: BlobKind::Config,
        data: BlobData::Memory(Bytes::from(config)),
    }];
    let mut layer_descs = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&config_doc.rootfs.diff_ids) {
        let (member, offset, size) = store.locate(path)?.with_context(|| {
            format!(
                "docker-archive {}: layer {path} is missing (truncated archive?)",
                file.display()
            )
        })?;
        let head = read_range(&member, offset, size.min(4))?;
        // Classic archives hold uncompressed layers, whose digest is the config's diff_id (checked while they
        // stream); a compressed member has to be hashed first.
        let (digest, media_type) = match head.as_slice() {
            [0x1f, 0x8b, ..] => (hash_range(&member, offset, size)?, OCI_LAYER_GZIP),
            [0x28, 0xb5, 0x2f, 0xfd] => (hash_range(&member, offset, size)?, OCI_LAYER_ZSTD),
            _ => {
                let d: Digest = diff_id
                    .parse()
                    .with_context(|| format!("docker-archive {}: diff_id {diff_id} is not a digest", file.display()))?;
                sha256_of(&d)?;
                (d.to_string(), OCI_LAYER_TAR)
            }
        };
        layer_descs.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
        if !blobs.iter().any(|b| b.digest == digest) {
            blobs.push(Blob {
                digest,
                size,
                media_type: media_type.into(),
                kind: BlobKind::Layer,
                data: BlobData::File { path: member, offset },
            });
        }
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": blobs[0].size},
        "layers": layer_descs,
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest)?);
    let tag = match select {
        Some(s) => tag_of_name(s),
        None => entry.repo_tags.iter().flatten().next().and_then(|t| tag_of_name(t)),
    };
    Ok(Image {
        source,
        tag,
        blobs,
        manifests: vec![ManifestBlob {
            digest: sha256_digest(&bytes),
            media_type: OCI_MANIFEST.into(),
            bytes,
        }],
        _spool: None,
    })
}

fn hash_range(path: &Path, offset: u64, len: u64) -> anyhow::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    let n = std::io::copy(&mut f.take(len), &mut hasher)?;
    if n != len {
        bail!("{} ends inside a layer", path.display());
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes an OCI layout with one image of the given layers; returns the manifest digest.
    pub(crate) fn write_layout(dir: &Path, tag: &str, layers: &[&[u8]]) -> String {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = sha256_digest(bytes);
            std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
            d
        };
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let config_digest = put(&config);
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": put(l), "size": l.len()}))
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        }))
        .unwrap();
        let md = put(&manifest);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len(),
            "annotations": {REF_NAME: tag}
        }]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        md
    }

    #[test]
    fn oci_layout_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let md = write_layout(dir.path(), "v1", &[b"layer one", b"layer two"]);
        let img = load_oci_dir(dir.path(), Some("v1")).unwrap();
        assert_eq!(img.top().digest, md);
        assert_eq!(img.tag.as_deref(), Some("v1"));
        assert_eq!(img.blobs.len(), 3);
        assert_eq!(img.blobs[0].kind, BlobKind::Config);
        let e = load_oci_dir(dir.path(), Some("v2")).unwrap_err().to_string();
        assert!(e.contains("no image tagged v2; it has: v1"), "{e}");

        // A layer shorter than its descriptor is caught before anything is pushed, by digest.
        let layer = sha256_digest(b"layer two");
        std::fs::write(dir.path().join("blobs/sha256").join(&layer[7..]), b"layer").unwrap();
        let e = load_oci_dir(dir.path(), None).unwrap_err().to_string();
        assert!(
            e.contains(&format!("layer {layer}")) && e.contains("5 bytes but its descriptor says 9"),
            "{e}"
        );

        // A tampered manifest fails its digest.
        std::fs::write(dir.path().join("blobs/sha256").join(&md[7..]), b"{}").unwrap();
        let e = load_oci_dir(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains(&format!("manifest {md}")), "{e}");
    }

    #[test]
    fn not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_oci_dir(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalise("./a/../b//c"), "b/c");
        assert_eq!(normalise("abc/layer.tar"), "abc/layer.tar");
        assert_eq!(tag_of_name("reg:5000/app:1.0").as_deref(), Some("1.0"));
        assert_eq!(tag_of_name("reg:5000/app"), None);
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(docker_name("app:v1"), "docker.io/library/app:v1");
        assert_eq!(docker_name("team/app:v1"), "docker.io/team/app:v1");
        assert_eq!(docker_name("docker.io/team/app:v1"), "docker.io/team/app:v1");
        assert_eq!(docker_name("localhost:5000/app:v1"), "localhost:5000/app:v1");
    }
}
