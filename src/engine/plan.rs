//! `plan`: observe every resource once (the provider's prefetch first), diff it against its desired attributes,
//! and show what apply would do; observation runs through the executor, dependencies first.

use super::*;

/// One resource in a plan.
pub struct PlannedResource {
    pub resource: Arc<dyn Resource>,
    pub observed: Option<Observed>,
    pub change: Change,
    /// Resources of phases outside this run are only read: they must exist.
    pub read_only: bool,
}

pub struct Plan {
    pub resources: Vec<PlannedResource>,
    /// Existing resources of the cluster the spec no longer wants; deleted after everything else is applied.
    pub deletions: Vec<PlannedDeletion>,
}

/// A resource to delete because the spec no longer has it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedDeletion {
    pub resource: String,
    pub kind: &'static str,
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct PlanEntry {
    pub resource: String,
    pub kind: &'static str,
    pub phase: Phase,
    pub id: Option<String>,
    #[serde(flatten)]
    pub change: Change,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.deletions.is_empty() || self.resources.iter().any(|r| r.change != Change::None)
    }

    pub fn entries(&self) -> Vec<PlanEntry> {
        self.resources
            .iter()
            .filter(|r| !r.read_only)
            .map(|r| PlanEntry {
                resource: r.resource.id().into(),
                kind: r.resource.kind(),
                phase: r.resource.phase(),
                id: r.observed.as_ref().map(|o| o.id.clone()),
                change: r.change.clone(),
            })
            .chain(self.deletions.iter().map(|d| PlanEntry {
                resource: d.resource.clone(),
                kind: d.kind,
                phase: Phase::Network,
                id: Some(d.id.clone()),
                change: Change::Delete,
            }))
            .collect()
    }

    /// Terraform-style text: one line per changing resource, attribute changes indented below.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (mut create, mut update, mut replace, mut same) = (0, 0, 0, 0);
        for r in self.resources.iter().filter(|r| !r.read_only) {
            let id = r.resource.id();
            let cloud_id = r.observed.as_ref().map(|o| format!(" ({})", o.id)).unwrap_or_default();
            match &r.change {
                Change::None => same += 1,
                Change::Delete => {}
                Change::Create => {
                    create += 1;
                    out.push_str(&format!("  + {id}\n"));
                }
                Change::Update(cs) | Change::Replace(cs) => {
                    let (sign, verb) = if matches!(r.change, Change::Update(_)) {
                        update += 1;
                        ("~", "update in place")
                    } else {
                        replace += 1;
                        ("-/+", "replace")
                    };
                    out.push_str(&format!("  {sign} {id}{cloud_id}: {verb}\n"));
                    for c in cs {
                        let from = c.from.as_deref().unwrap_or("(unset)");
                        out.push_str(&format!("      {}: {from} -> {}\n", c.name, c.to));
                    }
                }
            }
        }
        for d in &self.deletions {
            out.push_str(&format!(
                "  - {} ({}): delete, no longer in the spec\n",
                d.resource, d.id
            ));
        }
        out.push_str(&format!(
            "Plan: {create} to create, {update} to update in place, {replace} to replace, {} to delete, {same} unchanged.\n",
            self.deletions.len()
        ));
        out
    }
}

/// Error for a plan that cannot be carried out; lists every problem.
#[derive(Debug, thiserror::Error)]
#[error("the plan cannot be carried out:\n{}", .0.iter().map(|e| format!("  {e:#}")).collect::<Vec<_>>().join("\n"))]
pub struct PlanError(pub Vec<anyhow::Error>);

pub(super) struct FindJob {
    pub(super) resource: Arc<dyn Resource>,
    pub(super) ctx: Arc<Ctx>,
    pub(super) no_deps: Vec<String>,
}

#[async_trait]
impl executor::Job<Option<Observed>> for FindJob {
    fn id(&self) -> &str {
        self.resource.id()
    }
    fn deps(&self) -> &[String] {
        &self.no_deps
    }
    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }
    fn action(&self) -> String {
        "find".into()
    }
    async fn step(&self, _: &BTreeMap<String, Option<Observed>>) -> anyhow::Result<Step<Option<Observed>>> {
        Ok(Step::Done(self.resource.find(&self.ctx).await?))
    }
}

/// Observes every resource (all finds at once: finds go by tags, not by parent ids) and diffs it.
pub async fn plan(
    ctx: &Arc<Ctx>,
    resources: Vec<Arc<dyn Resource>>,
    phases: &[Phase],
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<Plan> {
    if !resources.is_empty()
        && let Some(prefetch) = ctx.prefetch
    {
        prefetch(ctx).await?;
    }
    let jobs: Vec<Arc<dyn executor::Job<Option<Observed>>>> = resources
        .iter()
        .map(|r| {
            Arc::new(FindJob {
                resource: Arc::clone(r),
                ctx: Arc::clone(ctx),
                no_deps: Vec::new(),
            }) as Arc<dyn executor::Job<Option<Observed>>>
        })
        .collect();
    let quiet = crate::progress::Silent;
    let mut found = executor::run(jobs, opts, &quiet).await?;
    let mut errors = Vec::new();
    let mut observed: BTreeMap<String, Option<Observed>> = BTreeMap::new();
    for r in &resources {
        match found.remove(r.id()) {
            Some(Outcome::Done(o)) => {
                observed.insert(r.id().into(), o);
            }
            Some(Outcome::Failed(e)) => errors.push(e.context(format!("finding {}", r.id()))),
            _ => errors.push(anyhow::anyhow!("{}: not observed", r.id())),
        }
    }
    if !errors.is_empty() {
        return Err(PlanError(errors).into());
    }
    let existing = observed.values().filter(|o| o.is_some()).count();
    reporter.event(crate::progress::Event::Note(format!(
        "found {existing} of {} resources",
        resources.len()
    )));

    // Diff in dependency order so each resource sees whether its dependencies' outputs will be known.
    let graph: Vec<Arc<dyn executor::Job<()>>> = resources
        .iter()
        .map(|r| Arc::new(GraphNode(Arc::clone(r))) as Arc<dyn executor::Job<()>>)
        .collect();
    let order = executor::topological_order(&graph)?;
    let by_id: BTreeMap<&str, &Arc<dyn Resource>> = resources.iter().map(|r| (r.id(), r)).collect();
    let mut known_outputs: BTreeMap<String, Option<Outputs>> = BTreeMap::new();
    let mut planned: BTreeMap<String, PlannedResource> = BTreeMap::new();
    for id in &order {
        let r = by_id[id.as_str()];
        let read_only = !phases.contains(&r.phase());
        let actual = observed.remove(id.as_str()).flatten();
        let inputs = Inputs::new(
            r.depends_on()
                .iter()
                .map(|d| (d.clone(), known_outputs.get(d).cloned().flatten()))
                .collect(),
        );
        let desired = r.desired(&inputs);
        let change = match r.diff(actual.as_ref(), &desired) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.into());
                Change::None
            }
        };
        let change = if read_only {
            if actual.is_none() {
                errors.push(anyhow::anyhow!(
                    "{id} belongs to the {} phase, which has not been applied\n  hint: run the {} phase first (`--phase {}`), or drop --phase",
                    r.phase(),
                    r.phase(),
                    r.phase()
                ));
            }
            Change::None
        } else {
            change
        };
        let outputs = match &change {
            Change::None => actual.as_ref().map(|a| a.outputs.clone()),
            Change::Update(_) => actual.as_ref().map(|a| r.planned_outputs(a, &change)),
            Change::Create | Change::Replace(_) | Change::Delete => None,
        };
        known_outputs.insert(id.clone(), outputs);
        planned.insert(
            id.clone(),
            PlannedResource {
                resource: Arc::clone(r),
                observed: actual,
                change,
                read_only,
            },
        );
    }
    if !errors.is_empty() {
        return Err(PlanError(errors).into());
    }
    Ok(Plan {
        resources: order.iter().filter_map(|id| planned.remove(id)).collect(),
        deletions: Vec::new(),
    })
}

/// A resource seen only as a graph node (ordering and depth).
pub(super) struct GraphNode(Arc<dyn Resource>);

#[async_trait]
impl executor::Job<()> for GraphNode {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn deps(&self) -> &[String] {
        self.0.depends_on()
    }
    fn deadline(&self) -> Duration {
        self.0.deadline()
    }
    fn action(&self) -> String {
        String::new()
    }
    async fn step(&self, _: &BTreeMap<String, ()>) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

/// Longest dependency chain of the resources, in resources: the number of rounds of calls a create needs at
/// best, whatever the concurrency.
pub fn graph_depth(resources: &[Arc<dyn Resource>]) -> anyhow::Result<usize> {
    let graph: Vec<Arc<dyn executor::Job<()>>> = resources
        .iter()
        .map(|r| Arc::new(GraphNode(Arc::clone(r))) as Arc<dyn executor::Job<()>>)
        .collect();
    Ok(executor::depth(&graph)?)
}
