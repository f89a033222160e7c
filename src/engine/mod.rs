//! The reconcile engine: every cloud thing is a [`Resource`] that can be found (by kforge tags), diffed against
//! its desired attributes, applied and deleted.
//!
//! `plan` observes every resource and diffs it; `apply` runs that same plan through the executor, recomputing each
//! resource's desired attributes with the real outputs of its dependencies just before acting. So a plan shows
//! exactly the code path apply executes, and a resource whose diff is empty causes no mutating call at all.
//!
//! `plan` (engine::plan) and `apply` (engine::apply) live in their own files; this module holds the `Resource`
//! trait, its context (`Ctx`) and the values, diffs and changes they share.

pub mod executor;
pub mod wait;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use executor::{ExecOptions, Outcome, Step};

use crate::aws::Aws;
use crate::aws::inventory::Inventory;
use crate::progress::Reporter;

/// Outputs of a resource that dependants consume: `id`, `arn`, ...
pub type Outputs = BTreeMap<String, String>;

/// Lifecycle phases, as kops' `--phase`: a run can stop after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Network,
    Security,
    Cluster,
    Bootstrap,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Network, Phase::Security, Phase::Cluster, Phase::Bootstrap];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Network => "network",
            Phase::Security => "security",
            Phase::Cluster => "cluster",
            Phase::Bootstrap => "bootstrap",
        })
    }
}

/// A provider's up-front listing: one listing per kind, all at once, so every `find` that follows is answered
/// from the snapshot in [`Ctx::inventory`]. Providers hand it to the engine, which knows no cloud.
pub type Prefetch = fn(&Ctx) -> futures::future::BoxFuture<'_, anyhow::Result<()>>;

/// What resources act on.
pub struct Ctx {
    pub aws: Aws,
    pub cluster: String,
    /// What exists, listed by kind at the first question and shared by every resource's `find`.
    pub inventory: Inventory,
    /// What `plan` lists up front, once, before the finds: the provider's (see [`Prefetch`]); `None` for stacks
    /// whose few kinds are found one by one.
    pub prefetch: Option<Prefetch>,
    /// The run generation of the state lock (see `state::LockInfo::generation`); set once the lock is held.
    generation: std::sync::OnceLock<String>,
}

impl Ctx {
    pub fn new(aws: Aws, cluster: &str) -> Self {
        Ctx {
            aws,
            cluster: cluster.into(),
            inventory: Inventory::new(cluster),
            prefetch: None,
            generation: std::sync::OnceLock::new(),
        }
    }

    /// Creates from here on are made under `generation` (the held lock's); the first call wins.
    pub fn set_generation(&self, generation: &str) {
        let _ = self.generation.set(generation.to_string());
    }

    /// The idempotency token (`ClientToken`, `clientRequestToken`) for creating `logical` as `desired`. It is the
    /// same in a run that took over a crashed run's lock, so AWS answers that run's in-flight create instead of
    /// making a second resource; a later run has a generation of its own, so re-creating a resource that was
    /// deleted makes a new one (AWS keeps a token's first answer for a day or more after the resource is gone).
    /// `desired` is part of it: a spec changed between the two runs makes a new create rather than AWS's
    /// `IdempotentParameterMismatch`. 64 characters at most, as EC2 requires.
    pub fn client_token(&self, logical: &str, desired: &Desired) -> String {
        use sha2::Digest as _;
        let generation = self.generation.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-{nanos:x}", std::process::id())
        });
        let mut h = sha2::Sha256::new();
        for part in [self.cluster.as_str(), generation, logical] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for a in &desired.attrs {
            h.update(a.name.as_bytes());
            h.update([1]);
            h.update(a.value.known().unwrap_or("\u{0}unknown").as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
        format!("kforge-{hex}")
    }
}

/// A desired attribute value; `Unknown` when it comes from a dependency that does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Known(String),
    Unknown,
}

impl Value {
    pub fn known(&self) -> Option<&str> {
        match self {
            Value::Known(s) => Some(s),
            Value::Unknown => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Known(s) => f.write_str(s),
            Value::Unknown => f.write_str("(known after apply)"),
        }
    }
}

/// How a change of an attribute can be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mutability {
    /// An API call changes it on the existing resource.
    InPlace,
    /// The resource is deleted and created again.
    Replace,
    /// kforge refuses to change it (replacing would destroy what runs on it).
    Immutable,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: &'static str,
    pub value: Value,
    pub mutability: Mutability,
}

/// The desired attributes of a resource, in display order.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub attrs: Vec<Attr>,
}

impl Desired {
    pub fn attr(mut self, name: &'static str, value: impl Into<Value>, mutability: Mutability) -> Self {
        self.attrs.push(Attr {
            name,
            value: value.into(),
            mutability,
        });
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// The known value of an attribute; apply only runs once every dependency has its outputs, so a desired
    /// value is always known there.
    pub fn value(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name)
            .and_then(Value::known)
            .ok_or_else(|| anyhow::anyhow!("internal: attribute `{name}` is not known at apply time"))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Known(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Known(s.into())
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Known(b.to_string())
    }
}

/// What was found in the cloud for a resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The cloud id (vpc-..., subnet-..., or a composite for things like routes).
    pub id: String,
    pub attrs: BTreeMap<&'static str, String>,
    pub outputs: Outputs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttrChange {
    pub name: &'static str,
    pub from: Option<String>,
    pub to: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", content = "changes", rename_all = "lowercase")]
pub enum Change {
    None,
    Create,
    Update(Vec<AttrChange>),
    Replace(Vec<AttrChange>),
    /// Only in plan entries: an existing resource the spec no longer wants.
    Delete,
}

impl Change {
    pub fn verb(&self) -> &'static str {
        match self {
            Change::None => "unchanged",
            Change::Create => "create",
            Change::Update(_) => "update",
            Change::Replace(_) => "replace",
            Change::Delete => "delete",
        }
    }
}

/// A change kforge will not make; the message says what to do instead.
#[derive(Debug, Clone)]
pub struct ImmutableChange {
    pub resource: String,
    pub kind: &'static str,
    pub attr: &'static str,
    pub from: String,
    pub to: String,
    /// What to do instead, when it is not "revert or re-create" (a version change goes through `upgrade`).
    pub hint: Option<String>,
}

impl fmt::Display for ImmutableChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ImmutableChange {
            resource,
            kind,
            attr,
            from,
            to,
            hint,
        } = self;
        match hint {
            Some(hint) => write!(
                f,
                "{resource}: apply does not change {attr} from {from} to {to}\n  hint: {hint}"
            ),
            None => write!(
                f,
                "{resource}: changing {attr} from {from} to {to} is not possible in place, and kforge will not replace a {kind} that may hold running workloads\n  hint: revert {attr} in the spec, or delete and re-create the cluster"
            ),
        }
    }
}

impl std::error::Error for ImmutableChange {}

/// Outputs of a resource's dependencies; a dependency being created has no outputs yet.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    outputs: BTreeMap<String, Option<Outputs>>,
}

impl Inputs {
    pub fn new(outputs: BTreeMap<String, Option<Outputs>>) -> Self {
        Inputs { outputs }
    }

    /// Inputs at apply time: every dependency has finished and has its outputs.
    pub fn from_finished(outputs: &BTreeMap<String, Outputs>) -> Self {
        Inputs::new(outputs.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect())
    }

    /// The `id` outputs of `deps`, sorted and comma-separated (the form list attributes are compared in); `Unknown`
    /// while any of them is yet to be created.
    pub fn joined_ids(&self, deps: &[String]) -> Value {
        let mut ids = std::collections::BTreeSet::new();
        for d in deps {
            match self.get(d, "id") {
                Value::Known(id) => {
                    ids.insert(id);
                }
                Value::Unknown => return Value::Unknown,
            }
        }
        Value::Known(ids.into_iter().collect::<Vec<_>>().join(","))
    }

    /// `dep`'s output `key`, or `Unknown` while `dep` is yet to be created.
    pub fn get(&self, dep: &str, key: &str) -> Value {
        match self.outputs.get(dep) {
            Some(Some(o)) => o.get(key).map(|v| Value::Known(v.clone())).unwrap_or(Value::Unknown),
            _ => Value::Unknown,
        }
    }
}

#[async_trait]
pub trait Resource: Send + Sync {
    /// Logical id, unique in the cluster and stable across runs (`subnet/private-us-east-1a`). Also the value of
    /// the `kforge.dev/resource` tag.
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    fn phase(&self) -> Phase;
    fn depends_on(&self) -> &[String];
    /// How long creating (and waiting for) this resource may take.
    fn deadline(&self) -> Duration {
        Duration::from_secs(300)
    }
    fn desired(&self, inputs: &Inputs) -> Desired;
    /// The resource as it exists now, found by its kforge tags (or through a tagged parent); `None` if absent.
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>>;
    /// Compares attribute by attribute; resources rarely need to override this.
    fn diff(&self, actual: Option<&Observed>, desired: &Desired) -> Result<Change, Box<ImmutableChange>> {
        diff_attrs(self.id(), self.kind(), actual, desired)
    }
    /// Carries out a `Create` or `Update` and returns the outputs; `Retry` when the cloud is not ready for it yet
    /// (a parent just created and not yet visible), in which case nothing was changed.
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>>;
    /// The outputs dependants may count on while planning an in-place `change`: by default the current ones. A
    /// resource whose update changes an output (a launch template's new version) leaves that output out, so
    /// dependants show it as known after apply.
    fn planned_outputs(&self, actual: &Observed, _change: &Change) -> Outputs {
        actual.outputs.clone()
    }
    /// Whether a just-applied resource is usable (NAT gateway available, instance running).
    async fn ready(&self, _ctx: &Ctx, _outputs: &Outputs) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
    /// Deletes the resource; `Retry`/`Blocked` until it is gone. Must be safe to call again.
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>>;
}

/// The metadata methods of a [`Resource`] whose struct has `id: String` and `deps: Vec<String>` fields:
/// `resource_metadata!("subnet", Phase::Network);` inside the `impl`.
macro_rules! resource_metadata {
    ($kind:literal, $phase:expr) => {
        fn id(&self) -> &str {
            &self.id
        }
        fn kind(&self) -> &'static str {
            $kind
        }
        fn phase(&self) -> $crate::engine::Phase {
            $phase
        }
        fn depends_on(&self) -> &[String] {
            &self.deps
        }
    };
}
pub(crate) use resource_metadata;

/// The generic attribute diff behind [`Resource::diff`].
pub fn diff_attrs(
    id: &str,
    kind: &'static str,
    actual: Option<&Observed>,
    desired: &Desired,
) -> Result<Change, Box<ImmutableChange>> {
    let Some(actual) = actual else {
        return Ok(Change::Create);
    };
    let mut changes = Vec::new();
    let mut replace = false;
    for a in &desired.attrs {
        let current = actual.attrs.get(a.name);
        let same = match (&a.value, current) {
            (Value::Known(want), Some(have)) => want == have,
            _ => false,
        };
        if same {
            continue;
        }
        match a.mutability {
            Mutability::Immutable => {
                return Err(Box::new(ImmutableChange {
                    resource: id.into(),
                    kind,
                    attr: a.name,
                    from: current.cloned().unwrap_or_else(|| "(unset)".into()),
                    to: a.value.to_string(),
                    hint: None,
                }));
            }
            Mutability::Replace => replace = true,
            Mutability::InPlace => {}
        }
        changes.push(AttrChange {
            name: a.name,
            from: current.cloned(),
            to: a.value.clone(),
        });
    }
    Ok(if changes.is_empty() {
        Change::None
    } else if replace {
        Change::Replace(changes)
    } else {
        Change::Update(changes)
    })
}

mod apply;
mod plan;

pub use apply::*;
pub use plan::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(attrs: &[(&'static str, &str)]) -> Observed {
        Observed {
            id: "x-1".into(),
            attrs: attrs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            outputs: Outputs::new(),
        }
    }

    #[test]
    fn diff_classifies_changes() {
        let desired = Desired::default()
            .attr("cidr", "10.0.0.0/16", Mutability::Immutable)
            .attr("dns", true, Mutability::InPlace)
            .attr("subnet", Value::Unknown, Mutability::Replace);
        assert_eq!(diff_attrs("vpc", "vpc", None, &desired).unwrap(), Change::Create);

        let same = observed(&[("cidr", "10.0.0.0/16"), ("dns", "true"), ("subnet", "s-1")]);
        let d2 = Desired::default()
            .attr("cidr", "10.0.0.0/16", Mutability::Immutable)
            .attr("dns", true, Mutability::InPlace);
        assert_eq!(diff_attrs("vpc", "vpc", Some(&same), &d2).unwrap(), Change::None);

        let dns_off = observed(&[("cidr", "10.0.0.0/16"), ("dns", "false")]);
        assert!(matches!(diff_attrs("vpc", "vpc", Some(&dns_off), &d2).unwrap(), Change::Update(c) if c.len() == 1));

        // An attribute that depends on a resource being created is a change; Replace wins over InPlace.
        let c = diff_attrs("nat", "nat", Some(&same), &desired).unwrap();
        assert!(matches!(c, Change::Replace(ref cs) if cs[0].name == "subnet"));

        let moved = observed(&[("cidr", "10.1.0.0/16"), ("dns", "true")]);
        let e = diff_attrs("vpc", "vpc", Some(&moved), &d2).unwrap_err();
        assert_eq!(e.attr, "cidr");
        assert!(e.to_string().contains("hint: revert cidr"), "{e}");
    }

    #[test]
    fn client_tokens_repeat_within_a_generation_only() {
        let aws = || Aws::with_clients(None, None, None);
        let desired = Desired::default().attr("vpc", "vpc-1", Mutability::Replace);
        let crashed = Ctx::new(aws(), "demo");
        crashed.set_generation("g1");
        let heir = Ctx::new(aws(), "demo");
        heir.set_generation("g1");
        let token = crashed.client_token("route-table/public", &desired);
        assert_eq!(token, heir.client_token("route-table/public", &desired));
        assert!(token.len() <= 64 && token.is_ascii(), "{token}");
        assert_ne!(token, heir.client_token("route-table/private-a", &desired));
        let changed = Desired::default().attr("vpc", "vpc-2", Mutability::Replace);
        assert_ne!(token, heir.client_token("route-table/public", &changed));
        let later = Ctx::new(aws(), "demo");
        later.set_generation("g2");
        assert_ne!(token, later.client_token("route-table/public", &desired));
        let other_cluster = Ctx::new(aws(), "other");
        other_cluster.set_generation("g1");
        assert_ne!(token, other_cluster.client_token("route-table/public", &desired));
    }

    #[test]
    fn inputs_of_missing_dependencies_are_unknown() {
        let mut m = BTreeMap::new();
        m.insert(
            "vpc".to_string(),
            Some(Outputs::from([("id".to_string(), "vpc-1".to_string())])),
        );
        m.insert("igw".to_string(), None);
        let i = Inputs::new(m);
        assert_eq!(i.get("vpc", "id"), Value::Known("vpc-1".into()));
        assert_eq!(i.get("igw", "id"), Value::Unknown);
        assert_eq!(i.get("nope", "id"), Value::Unknown);
    }
}
