//! `apply`: the plan's resources through the executor, each desired state recomputed with its dependencies'
//! real outputs just before it acts; `ready` waits and deadlines per resource.

use super::*;

pub(super) enum ApplyState {
    Start,
    Deleting,
    /// Replacing: the old resource is gone, the new one is to be created.
    Creating,
    Waiting(Outputs),
}

pub(super) struct ApplyJob {
    pub(super) planned: PlannedResource,
    pub(super) ctx: Arc<Ctx>,
    pub(super) state: Mutex<ApplyState>,
    pub(super) action: String,
}

impl ApplyJob {
    pub(super) fn set(&self, s: ApplyState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

#[async_trait]
impl executor::Job<Outputs> for ApplyJob {
    fn id(&self) -> &str {
        self.planned.resource.id()
    }
    fn deps(&self) -> &[String] {
        self.planned.resource.depends_on()
    }
    fn deadline(&self) -> Duration {
        self.planned.resource.deadline()
    }
    fn action(&self) -> String {
        self.action.clone()
    }
    async fn step(&self, inputs: &BTreeMap<String, Outputs>) -> anyhow::Result<Step<Outputs>> {
        let r = &self.planned.resource;
        let state = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            ApplyState::Start,
        );
        match state {
            ApplyState::Waiting(outputs) => match r.ready(&self.ctx, &outputs).await? {
                Step::Done(()) => Ok(Step::Done(outputs)),
                Step::Retry { after, reason } => {
                    self.set(ApplyState::Waiting(outputs));
                    Ok(Step::Retry { after, reason })
                }
                Step::Blocked { reason } => {
                    self.set(ApplyState::Waiting(outputs));
                    Ok(Step::Blocked { reason })
                }
            },
            ApplyState::Deleting => {
                let actual = self
                    .planned
                    .observed
                    .as_ref()
                    .expect("replace has an observed resource");
                match r.delete(&self.ctx, actual).await? {
                    Step::Done(()) => {
                        self.set(ApplyState::Creating);
                        Ok(Step::Retry {
                            after: Duration::ZERO,
                            reason: "replacing: old one deleted".into(),
                        })
                    }
                    other => {
                        self.set(ApplyState::Deleting);
                        Ok(map_wait(other))
                    }
                }
            }
            ApplyState::Creating => {
                let inputs = Inputs::from_finished(inputs);
                let desired = r.desired(&inputs);
                match r.apply(&self.ctx, &Change::Create, None, &desired).await? {
                    Step::Done(outputs) => self.after_apply(outputs).await,
                    other => {
                        self.set(ApplyState::Creating);
                        Ok(map_wait(other))
                    }
                }
            }
            ApplyState::Start => {
                let inputs = Inputs::from_finished(inputs);
                let desired = r.desired(&inputs);
                let actual = self.planned.observed.as_ref();
                // Recomputed with the real outputs of the dependencies: what plan showed as "known after apply"
                // is known now, and may turn out unchanged.
                let change = if self.planned.read_only {
                    Change::None
                } else {
                    r.diff(actual, &desired)?
                };
                match change {
                    Change::None => Ok(Step::Done(actual.map(|a| a.outputs.clone()).unwrap_or_default())),
                    Change::Replace(_) => {
                        self.set(ApplyState::Deleting);
                        Ok(Step::Retry {
                            after: Duration::ZERO,
                            reason: "replacing".into(),
                        })
                    }
                    change => match r.apply(&self.ctx, &change, actual, &desired).await? {
                        Step::Done(outputs) => self.after_apply(outputs).await,
                        other => Ok(map_wait(other)),
                    },
                }
            }
        }
    }
}

impl ApplyJob {
    pub(super) async fn after_apply(&self, outputs: Outputs) -> anyhow::Result<Step<Outputs>> {
        match self.planned.resource.ready(&self.ctx, &outputs).await? {
            Step::Done(()) => Ok(Step::Done(outputs)),
            other => {
                self.set(ApplyState::Waiting(outputs));
                Ok(map_wait(other))
            }
        }
    }
}

pub(super) fn map_wait<T, U>(s: Step<T>) -> Step<U> {
    match s {
        Step::Retry { after, reason } => Step::Retry { after, reason },
        Step::Blocked { reason } => Step::Blocked { reason },
        Step::Done(_) => Step::Retry {
            after: Duration::ZERO,
            reason: String::new(),
        },
    }
}

/// What happened to each resource in an apply.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub resource: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub result: String,
    pub id: Option<String>,
}

pub struct ApplyReport {
    pub entries: Vec<Applied>,
    pub outputs: BTreeMap<String, Outputs>,
    pub errors: Vec<anyhow::Error>,
}

/// Executes a plan: resources whose dependencies are done run concurrently.
pub async fn apply(
    ctx: &Arc<Ctx>,
    plan: Plan,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<ApplyReport> {
    let mut meta = Vec::new();
    let jobs: Vec<Arc<dyn executor::Job<Outputs>>> = plan
        .resources
        .into_iter()
        .map(|p| {
            meta.push((
                p.resource.id().to_string(),
                p.resource.kind(),
                p.change.verb(),
                p.read_only,
            ));
            let action = match &p.change {
                Change::None => "check".to_string(),
                c => c.verb().to_string(),
            };
            Arc::new(ApplyJob {
                planned: p,
                ctx: Arc::clone(ctx),
                state: Mutex::new(ApplyState::Start),
                action,
            }) as Arc<dyn executor::Job<Outputs>>
        })
        .collect();
    let outcomes = executor::run(jobs, opts, reporter).await?;
    let mut entries = Vec::new();
    let mut outputs = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, kind, verb, read_only) in meta {
        let (result, cloud_id) = match outcomes.get(&id) {
            Some(Outcome::Done(o)) => {
                outputs.insert(id.clone(), o.clone());
                ("ok".to_string(), o.get("id").cloned())
            }
            Some(Outcome::Failed(e)) => {
                errors.push(anyhow::anyhow!("{e:#}"));
                ("failed".to_string(), None)
            }
            Some(Outcome::Skipped { because_of }) => (format!("skipped ({because_of} failed)"), None),
            None => ("not run".into(), None),
        };
        if !read_only {
            entries.push(Applied {
                resource: id,
                kind,
                action: verb,
                result,
                id: cloud_id,
            });
        }
    }
    Ok(ApplyReport {
        entries,
        outputs,
        errors,
    })
}
