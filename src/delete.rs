//! Deleting a cluster: list everything tagged with it (so no local state is needed) kind by kind, delete in the
//! order the kinds' rules give through the executor (parallel where unblocked, `DependencyViolation` retried while
//! others progress), and report what happened to each resource. The walk knows no kind: each registered
//! [`Kind`] says how to list, delete and order its objects. The same walk prunes resources a changed spec no
//! longer wants and tears down an ECS service.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::engine::executor::{self, ExecOptions, Job, Outcome, Step};
use crate::engine::{Ctx, Phase};
use crate::progress::Reporter;

/// One kind of cloud object that delete finds by the cluster's tags and removes. Each kind implements it in its
/// own file, beside its engine `Resource` (see `providers::kinds` and `ecs::kinds`, the registries): how to list
/// what belongs to the cluster, how to delete one, and where it sits in the teardown order. Delete knows no kind.
#[async_trait]
pub trait Kind: std::fmt::Debug + Send + Sync {
    /// The kind's name in delete's table and job ids (`nat-gateway`).
    fn name(&self) -> &'static str;
    /// The phase whose apply owns this kind (what a spec change can leave behind as an orphan).
    fn phase(&self) -> Phase;
    /// Every object of this kind that belongs to the cluster (answered from `ctx.inventory` where it can be).
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>>;
    /// Deletes one object: `Done` once it is gone (or, without `wait`, once AWS has taken the deletion), `Retry`
    /// while it goes, `Blocked` while something else still holds it.
    async fn delete(&self, ctx: &Ctx, item: &Doomed, wait: bool) -> anyhow::Result<Step<()>>;
    /// What must be gone before an object of this kind is deleted.
    fn after(&self) -> &'static [Order] {
        &[]
    }
    /// What waits until the objects of this kind are gone: a kind added later says here what it holds up
    /// instead of editing the older kinds' `after`.
    fn before(&self) -> &'static [Order] {
        &[]
    }
    /// Whether AWS finishes a deletion of this kind after answering (a `Done` without waiting means "deleting").
    fn deletes_asynchronously(&self) -> bool {
        false
    }
    /// How an object is named in the report (its cloud id unless the kind says otherwise).
    fn shown_id(&self, item: &Doomed) -> String {
        item.cloud_id.clone()
    }
}

/// One teardown ordering rule between kinds, named by [`Kind::name`].
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// Every object of that kind.
    Kind(&'static str),
    /// The objects of that kind in the same VPC.
    InVpc(&'static str),
    /// Every object of any other kind in the same VPC (what a VPC waits for).
    EverythingInVpc,
}

impl Order {
    /// Whether the rule of `owner` (a rule of its kind's `after` or `before`) reaches `other`.
    fn reaches(self, other: &Doomed, owner: &Doomed) -> bool {
        let same_vpc = other.vpc.is_some() && other.vpc == owner.vpc;
        match self {
            Order::Kind(k) => other.kind.name() == k,
            Order::InVpc(k) => other.kind.name() == k && same_vpc,
            Order::EverythingInVpc => other.kind.name() != owner.kind.name() && same_vpc,
        }
    }

    fn kind_named(self) -> Option<&'static str> {
        match self {
            Order::Kind(k) | Order::InVpc(k) => Some(k),
            Order::EverythingInVpc => None,
        }
    }
}

/// One existing cloud object to delete.
#[derive(Debug, Clone)]
pub struct Doomed {
    pub kind: Arc<dyn Kind>,
    pub cloud_id: String,
    /// The `kforge.dev/resource` tag, if kforge created it.
    pub logical: Option<String>,
    pub vpc: Option<String>,
    /// Attachments (IGW: VPC ids) or associations (route table: association ids) to undo first.
    pub attached: Vec<String>,
    /// Already being deleted (a NAT gateway in `deleting`): on its way out, not an orphan to delete.
    pub deleting: bool,
}

impl Doomed {
    /// An object of `kind` with nothing attached, not deleting.
    pub fn new(
        kind: &Arc<dyn Kind>,
        cloud_id: impl Into<String>,
        logical: Option<String>,
        vpc: Option<&str>,
    ) -> Doomed {
        Doomed {
            kind: Arc::clone(kind),
            cloud_id: cloud_id.into(),
            logical,
            vpc: vpc.filter(|v| !v.is_empty()).map(str::to_string),
            attached: Vec::new(),
            deleting: false,
        }
    }

    fn job_id(&self) -> String {
        format!("{} {}", self.kind.name(), self.cloud_id)
    }
}

/// Everything of the registered `kinds` that exists for the cluster, for the kinds owned by `phases`, each kind
/// listed concurrently, in the registry's order.
pub async fn discover(ctx: &Ctx, kinds: &[Arc<dyn Kind>], phases: &[Phase]) -> anyhow::Result<Vec<Doomed>> {
    let listed = futures::future::try_join_all(
        kinds
            .iter()
            .filter(|k| phases.contains(&k.phase()))
            .map(|k| k.list(ctx, k)),
    )
    .await?;
    Ok(listed.into_iter().flatten().collect())
}

/// Resources kforge created for the cluster in `phases` whose logical id the spec no longer has (a NAT gateway
/// after `perZone` became `single`, the subnets of a dropped zone). Deleting them is part of converging.
pub async fn orphans(
    ctx: &Ctx,
    kinds: &[Arc<dyn Kind>],
    wanted: &BTreeSet<String>,
    phases: &[Phase],
) -> anyhow::Result<Vec<Doomed>> {
    // Empty twins of wanted resources that the plan's finds set aside go with the orphans.
    let surplus = ctx.inventory.surplus();
    Ok(discover(ctx, kinds, phases)
        .await?
        .into_iter()
        .filter(|d| d.logical.as_ref().is_some_and(|l| !wanted.contains(l)) || surplus.contains_key(&d.cloud_id))
        // What is already being deleted is on its way out.
        .filter(|d| !d.deleting)
        .collect())
}

/// What must be gone before `item` is deleted: by its kind's `after` rules and the other kinds' `before` rules.
pub(crate) fn deletion_deps(item: &Doomed, all: &[Doomed]) -> Vec<String> {
    all.iter()
        .filter(|other| other.job_id() != item.job_id())
        .filter(|other| {
            item.kind.after().iter().any(|o| o.reaches(other, item))
                || other.kind.before().iter().any(|o| o.reaches(item, other))
        })
        .map(Doomed::job_id)
        .collect()
}

/// The kinds an ordering rule of `kinds` names that are not among them (a misspelt name would silently order
/// nothing): for the registries' tests.
pub fn unknown_orders(kinds: &[Arc<dyn Kind>]) -> Vec<String> {
    let names: BTreeSet<&str> = kinds.iter().map(|k| k.name()).collect();
    kinds
        .iter()
        .flat_map(|k| k.after().iter().chain(k.before()).map(move |o| (k.name(), *o)))
        .filter_map(|(k, o)| {
            o.kind_named()
                .filter(|n| !names.contains(n))
                .map(|n| format!("{k} -> {n}"))
        })
        .collect()
}

struct DeleteJob {
    /// `kind cloud-id`, the key the executor reports by.
    job_id: String,
    item: Doomed,
    deps: Vec<String>,
    ctx: Arc<Ctx>,
    wait: bool,
}

#[async_trait]
impl Job<()> for DeleteJob {
    fn id(&self) -> &str {
        &self.job_id
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn deadline(&self) -> Duration {
        Duration::from_secs(1200)
    }
    fn action(&self) -> String {
        "delete".into()
    }
    async fn step(&self, _: &BTreeMap<String, ()>) -> anyhow::Result<Step<()>> {
        self.item.kind.delete(&self.ctx, &self.item, self.wait).await
    }
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub kind: &'static str,
    pub id: String,
    pub resource: Option<String>,
    pub result: DeleteResult,
}

/// What became of one resource of a delete (printed and serialized as the words the table shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteResult {
    /// Gone (waited for).
    Deleted,
    /// Deletion started and left to AWS (`--no-wait` on what deletes asynchronously).
    Deleting,
    /// Not finished without waiting: the first line of why.
    Pending(String),
    /// Not started because what it waits for did not finish.
    PendingAfter(String),
    Failed,
    NotRun,
}

impl std::fmt::Display for DeleteResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeleteResult::Deleted => f.write_str("deleted"),
            DeleteResult::Deleting => f.write_str("deleting"),
            DeleteResult::Pending(why) => write!(f, "pending: {why}"),
            DeleteResult::PendingAfter(job) => write!(f, "pending (after {job})"),
            DeleteResult::Failed => f.write_str("failed"),
            DeleteResult::NotRun => f.write_str("not run"),
        }
    }
}

impl Serialize for DeleteResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Serialize, Default)]
pub struct DeleteReport {
    pub entries: Vec<Deleted>,
    #[serde(skip)]
    pub errors: Vec<anyhow::Error>,
}

impl DeleteReport {
    pub fn deleted(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.result == DeleteResult::Deleted)
            .count()
    }

    /// Whether every resource is gone and nothing failed.
    pub fn finished(&self) -> bool {
        self.errors.is_empty() && self.entries.iter().all(|e| e.result == DeleteResult::Deleted)
    }
}

/// Deletes `items`; with `wait`, until each is gone.
pub async fn sweep(
    ctx: &Arc<Ctx>,
    items: Vec<Doomed>,
    wait: bool,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<DeleteReport> {
    let jobs: Vec<Arc<dyn Job<()>>> = items
        .iter()
        .map(|item| {
            Arc::new(DeleteJob {
                job_id: item.job_id(),
                deps: deletion_deps(item, &items),
                item: item.clone(),
                ctx: Arc::clone(ctx),
                wait,
            }) as Arc<dyn Job<()>>
        })
        .collect();
    let mut opts = opts.clone();
    if !wait {
        // Without waiting, what is blocked behind an asynchronous deletion is left for a later run.
        opts.stall_timeout = Duration::ZERO;
    }
    let mut outcomes = executor::run(jobs, &opts, reporter).await?;
    let mut report = DeleteReport::default();
    for item in items {
        let result = match outcomes.remove(&item.job_id()) {
            Some(Outcome::Done(())) if item.kind.deletes_asynchronously() && !wait => DeleteResult::Deleting,
            Some(Outcome::Done(())) => DeleteResult::Deleted,
            Some(Outcome::Failed(e)) if !wait => {
                DeleteResult::Pending(e.to_string().lines().next().unwrap_or_default().to_string())
            }
            Some(Outcome::Failed(e)) => {
                // Kept as it is: a deadline stays a `TimedOut` up to the exit code.
                report.errors.push(e);
                DeleteResult::Failed
            }
            Some(Outcome::Skipped { because_of }) => DeleteResult::PendingAfter(because_of.to_string()),
            None => DeleteResult::NotRun,
        };
        report.entries.push(Deleted {
            kind: item.kind.name(),
            id: item.kind.shown_id(&item),
            resource: item.logical,
            result,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_results_read_and_serialize_as_the_table_words() {
        let entry = Deleted {
            kind: "vpc",
            id: "vpc-1".into(),
            resource: None,
            result: DeleteResult::Pending("DependencyViolation: in use".into()),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["result"], "pending: DependencyViolation: in use");
        assert_eq!(
            DeleteResult::PendingAfter("subnet/a".into()).to_string(),
            "pending (after subnet/a)"
        );
        let mut report = DeleteReport::default();
        report.entries.push(Deleted {
            result: DeleteResult::Deleted,
            ..entry
        });
        assert!(report.finished());
        assert_eq!(report.deleted(), 1);
        report.entries.push(Deleted {
            kind: "nat-gateway",
            id: "nat-1".into(),
            resource: None,
            result: DeleteResult::Deleting,
        });
        assert!(!report.finished(), "a deletion left to AWS is not finished");
    }

    /// A kind for the walk's own tests: no cloud behind it.
    #[derive(Debug)]
    struct Fake(&'static str, &'static [Order], &'static [Order]);

    #[async_trait]
    impl Kind for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn phase(&self) -> Phase {
            Phase::Network
        }
        async fn list(&self, _: &Ctx, _: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &Ctx, _: &Doomed, _: bool) -> anyhow::Result<Step<()>> {
            Ok(Step::Done(()))
        }
        fn after(&self) -> &'static [Order] {
            self.1
        }
        fn before(&self) -> &'static [Order] {
            self.2
        }
    }

    #[test]
    fn order_comes_from_both_sides_and_vpc_scoping() {
        let gate: Arc<dyn Kind> = Arc::new(Fake("gate", &[Order::Kind("pump")], &[]));
        let pump: Arc<dyn Kind> = Arc::new(Fake("pump", &[], &[]));
        // A kind added later holds up an older one without the older one naming it.
        let late: Arc<dyn Kind> = Arc::new(Fake("late", &[], &[Order::InVpc("field")]));
        let field: Arc<dyn Kind> = Arc::new(Fake("field", &[], &[]));
        let fence: Arc<dyn Kind> = Arc::new(Fake("fence", &[Order::EverythingInVpc], &[]));
        let all = vec![
            Doomed::new(&gate, "g1", None, Some("vpc-1")),
            Doomed::new(&pump, "p1", None, Some("vpc-1")),
            Doomed::new(&pump, "p2", None, Some("vpc-2")),
            Doomed::new(&late, "l1", None, Some("vpc-1")),
            Doomed::new(&field, "f1", None, Some("vpc-1")),
            Doomed::new(&field, "f2", None, Some("vpc-2")),
            Doomed::new(&fence, "x1", None, Some("vpc-1")),
            Doomed::new(&fence, "x2", None, None),
        ];
        let deps = |i: usize| deletion_deps(&all[i], &all);
        assert_eq!(deps(0), ["pump p1", "pump p2"], "Order::Kind is every VPC");
        assert!(deps(1).is_empty());
        assert_eq!(deps(4), ["late l1"], "a `before` rule of another kind");
        assert!(deps(5).is_empty(), "InVpc: only the same VPC");
        assert_eq!(
            deps(6),
            ["gate g1", "pump p1", "late l1", "field f1"],
            "everything else in the VPC"
        );
        assert!(deps(7).is_empty(), "no VPC, nothing in it");
        let misspelt: Arc<dyn Kind> = Arc::new(Fake("x", &[Order::Kind("pumpp")], &[Order::InVpc("gate")]));
        assert_eq!(unknown_orders(&[misspelt, gate, pump]), ["x -> pumpp"]);
    }
}
