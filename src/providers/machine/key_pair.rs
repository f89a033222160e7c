//! The cluster's EC2 key pair (imported from the spec's public key, replaced when the key changes).

use super::*;

/// Tag on the key pair: a digest of the public key it was imported from, since AWS' own fingerprint of an
/// imported key differs by key type.
pub const PUBLIC_KEY_TAG: &str = "kforge.dev/public-key-sha256";

/// `SHA256:...` of an OpenSSH public key line's key blob, as `ssh-keygen -l` prints it.
pub fn public_key_fingerprint(line: &str) -> Option<String> {
    let blob = line.split_whitespace().nth(1)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(blob).ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

// ---------------------------------------------------------------- key pair

pub struct KeyPair {
    pub id: String,
    /// `kforge-CLUSTER`.
    pub name: String,
    pub public_key: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

impl KeyPair {
    pub(super) fn digest(&self) -> String {
        public_key_fingerprint(&self.public_key).unwrap_or_else(|| "(unreadable)".into())
    }
}

pub(super) fn key_outputs(id: &str, name: &str) -> Outputs {
    Outputs::from([
        ("id".to_string(), id.to_string()),
        ("name".to_string(), name.to_string()),
    ])
}

#[async_trait]
impl Resource for KeyPair {
    resource_metadata!("key-pair", Phase::Security);
    fn desired(&self, _: &Inputs) -> Desired {
        // A new key is a new key pair of the same name: machines started later get it, running ones keep theirs.
        Desired::default()
            .attr("publicKey", self.digest(), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let pairs = ctx.inventory.key_pairs(&ctx.aws).await?;
        let found = by_logical_id(
            pairs,
            "key pair",
            &ctx.cluster,
            &self.id,
            |k| k.tags(),
            |k| k.key_pair_id(),
        )?;
        Ok(found.map(|k| {
            let tags = ec2_tag_map(k.tags());
            Observed {
                id: k.key_pair_id().unwrap_or_default().to_string(),
                attrs: BTreeMap::from([
                    ("publicKey", tags.get(PUBLIC_KEY_TAG).cloned().unwrap_or_default()),
                    ("tags", render_subset(&tags, &self.tags)),
                ]),
                outputs: key_outputs(k.key_pair_id().unwrap_or_default(), k.key_name().unwrap_or(&self.name)),
            }
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let mut tags = self.tags.clone();
        tags.insert(PUBLIC_KEY_TAG.into(), self.digest());
        if let Some(done) = retag(ctx, change, actual, &self.id, &tags).await? {
            return Ok(done);
        }
        let imported = ctx
            .aws
            .ec2()
            .import_key_pair()
            .key_name(&self.name)
            .public_key_material(Blob::new(self.public_key.as_bytes()))
            .tag_specifications(ec2_tag_spec(ResourceType::KeyPair, &tags))
            .send()
            .await
            .map_err(aws_err(format!("{} ({})", self.id, self.name), "ImportKeyPair"))?;
        Ok(Step::Done(key_outputs(
            imported.key_pair_id().unwrap_or_default(),
            imported.key_name().unwrap_or(&self.name),
        )))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_key_pair(&ctx.aws, actual.outputs.get("name").unwrap_or(&self.name)).await
    }
}

/// Deletes a key pair by name (unique per region; every endpoint takes the name). Safe to call again.
pub async fn delete_key_pair(aws: &Aws, name: &str) -> anyhow::Result<Step<()>> {
    let r = aws.ec2().delete_key_pair().key_name(name).send().await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("key-pair ({name})"), "DeleteKeyPair")(e))) {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- instance profile

/// What delete knows about key pairs (see `delete::Kind`).
#[derive(Debug)]
pub struct KeyPairKind;

#[async_trait]
impl Kind for KeyPairKind {
    fn name(&self) -> &'static str {
        "key-pair"
    }
    fn phase(&self) -> Phase {
        Phase::Security
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .key_pairs(&ctx.aws)
            .await?
            .iter()
            .map(|k| Doomed::new(kind, k.key_name().unwrap_or_default(), logical_id(k.tags()), None))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_key_pair(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("auto-scaling-group"), Order::Kind("instance")]
    }
}
