//! The dependency-graph executor shared by observe, apply and delete.
//!
//! A job runs once all its dependencies are done, with the outputs of those dependencies as inputs. At most
//! `concurrency` jobs call out at once. A job answers `Done`, `Retry` (not ready: call again after a delay, until
//! its deadline) or `Blocked` (something else must finish first: call again while the run as a whole keeps making
//! progress). A failed job fails its dependants (reported as skipped); independent jobs continue, as kops does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::progress::{Event, Reporter};

/// One answer of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    Done(T),
    /// Not ready yet (an instance starting, a NAT gateway pending): ask again after `after`.
    Retry {
        after: Duration,
        reason: String,
    },
    /// Waiting for another resource to go away or appear (DependencyViolation): ask again while the run progresses.
    Blocked {
        reason: String,
    },
}

impl<T> Step<T> {
    /// Maps the `Done` value, keeping waits as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Done(v) => Step::Done(f(v)),
            Step::Retry { after, reason } => Step::Retry { after, reason },
            Step::Blocked { reason } => Step::Blocked { reason },
        }
    }
}

#[async_trait]
pub trait Job<O>: Send + Sync {
    fn id(&self) -> &str;
    fn deps(&self) -> &[String];
    /// How long this job may take from its first step, retries included.
    fn deadline(&self) -> Duration;
    /// A short verb for progress lines ("create", "delete", "find").
    fn action(&self) -> String;
    async fn step(&self, inputs: &BTreeMap<String, O>) -> anyhow::Result<Step<O>>;
}

#[derive(Debug)]
pub enum Outcome<O> {
    Done(O),
    Failed(anyhow::Error),
    /// Not run because a dependency did not finish.
    Skipped {
        because_of: String,
    },
}

impl<O> Outcome<O> {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub concurrency: usize,
    /// A blocked job gives up when no job anywhere has finished for this long.
    pub stall_timeout: Duration,
    /// Ends every job's deadline early (the run's `--timeout`).
    pub overall_deadline: Option<Instant>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 16,
            stall_timeout: Duration::from_secs(180),
            overall_deadline: None,
        }
    }
}

/// The graph is malformed (a programming error in a provider, reported rather than panicking).
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("job `{job}` depends on unknown job `{dep}`")]
    UnknownDependency { job: String, dep: String },
    #[error("dependency cycle through job `{0}`")]
    Cycle(String),
    #[error("job `{0}` is defined twice")]
    Duplicate(String),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{job}: gave up after {waited:?}: {reason}\n  hint: the resource may still be converging; re-run the same command to continue, or raise --timeout"
)]
pub struct TimedOut {
    pub job: String,
    pub waited: Duration,
    pub reason: String,
}

/// Longest chain of jobs, counted in jobs (a graph of independent jobs has depth 1).
pub fn depth<O>(jobs: &[Arc<dyn Job<O>>]) -> Result<usize, GraphError> {
    let order = topological_order(jobs)?;
    let index: BTreeMap<&str, &Arc<dyn Job<O>>> = jobs.iter().map(|j| (j.id(), j)).collect();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for id in order {
        let l = 1 + index[id.as_str()]
            .deps()
            .iter()
            .map(|d| level[d.as_str()])
            .max()
            .unwrap_or(0);
        level.insert(index[id.as_str()].id(), l);
    }
    Ok(level.values().copied().max().unwrap_or(0))
}

/// Job ids, dependencies before dependants.
pub fn topological_order<O>(jobs: &[Arc<dyn Job<O>>]) -> Result<Vec<String>, GraphError> {
    let mut ids = BTreeSet::new();
    for j in jobs {
        if !ids.insert(j.id().to_string()) {
            return Err(GraphError::Duplicate(j.id().into()));
        }
    }
    for j in jobs {
        for d in j.deps() {
            if !ids.contains(d) {
                return Err(GraphError::UnknownDependency {
                    job: j.id().into(),
                    dep: d.clone(),
                });
            }
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < jobs.len() {
        let before = order.len();
        for j in jobs {
            if !done.contains(j.id()) && j.deps().iter().all(|d| done.contains(d)) {
                done.insert(j.id().into());
                order.push(j.id().to_string());
            }
        }
        if order.len() == before {
            let stuck = jobs.iter().find(|j| !done.contains(j.id())).expect("some job left");
            return Err(GraphError::Cycle(stuck.id().into()));
        }
    }
    Ok(order)
}

/// Each job's height: the longest chain of jobs from it to the end of the graph, itself included.
fn heights<O>(jobs: &[Arc<dyn Job<O>>]) -> Result<BTreeMap<String, usize>, GraphError> {
    let order = topological_order(jobs)?;
    let mut dependants: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for j in jobs {
        for d in j.deps() {
            dependants.entry(d.as_str()).or_default().push(j.id());
        }
    }
    let mut height: BTreeMap<String, usize> = BTreeMap::new();
    for id in order.iter().rev() {
        let below = dependants
            .get(id.as_str())
            .into_iter()
            .flatten()
            .map(|d| height[*d])
            .max()
            .unwrap_or(0);
        height.insert(id.clone(), below + 1);
    }
    Ok(height)
}

/// Runs every job; returns each job's outcome. Only a malformed graph is an `Err`.
///
/// When more jobs are ready than may run, those heading the longest chains start first (critical path first):
/// they bound the run's length, the others have slack.
pub async fn run<O: Clone + Send + Sync + 'static>(
    mut jobs: Vec<Arc<dyn Job<O>>>,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<String, Outcome<O>>, GraphError> {
    let height = heights(&jobs)?;
    jobs.sort_by_key(|j| std::cmp::Reverse(height[j.id()]));
    let semaphore = Semaphore::new(opts.concurrency.max(1));
    let last_progress = Mutex::new(Instant::now());
    let mut outcomes: BTreeMap<String, Outcome<O>> = BTreeMap::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut running = FuturesUnordered::new();

    loop {
        // Start every job whose dependencies are all settled; skip those with a dependency that did not finish.
        let mut changed = true;
        while changed {
            changed = false;
            for job in &jobs {
                if started.contains(job.id()) {
                    continue;
                }
                let failed_dep = job
                    .deps()
                    .iter()
                    .find(|d| outcomes.get(*d).is_some_and(|o| !o.is_done()));
                if let Some(dep) = failed_dep {
                    started.insert(job.id().into());
                    reporter.event(Event::Skipped {
                        id: job.id().into(),
                        because_of: dep.clone(),
                    });
                    outcomes.insert(
                        job.id().into(),
                        Outcome::Skipped {
                            because_of: dep.clone(),
                        },
                    );
                    changed = true;
                    continue;
                }
                if job.deps().iter().all(|d| outcomes.get(d).is_some_and(Outcome::is_done)) {
                    started.insert(job.id().into());
                    let inputs: BTreeMap<String, O> = job
                        .deps()
                        .iter()
                        .filter_map(|d| match outcomes.get(d) {
                            Some(Outcome::Done(o)) => Some((d.clone(), o.clone())),
                            _ => None,
                        })
                        .collect();
                    let job = Arc::clone(job);
                    let semaphore = &semaphore;
                    let last_progress = &last_progress;
                    running.push(async move {
                        let outcome = drive(job.as_ref(), inputs, semaphore, last_progress, opts, reporter).await;
                        (job.id().to_string(), outcome)
                    });
                }
            }
        }
        match running.next().await {
            Some((id, outcome)) => {
                *last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                outcomes.insert(id, outcome);
            }
            None => break,
        }
    }
    Ok(outcomes)
}

async fn drive<O: Clone + Send + Sync>(
    job: &dyn Job<O>,
    inputs: BTreeMap<String, O>,
    semaphore: &Semaphore,
    last_progress: &Mutex<Instant>,
    opts: &ExecOptions,
    reporter: &dyn Reporter,
) -> Outcome<O> {
    let start = Instant::now();
    let mut deadline = start + job.deadline();
    if let Some(overall) = opts.overall_deadline {
        deadline = deadline.min(overall);
    }
    let mut blocked_pause = Duration::from_millis(250);
    reporter.event(Event::Started {
        id: job.id().into(),
        action: job.action(),
    });
    loop {
        let step = {
            let _permit = semaphore.acquire().await.expect("semaphore never closed");
            job.step(&inputs).await
        };
        let (pause, reason) = match step {
            Ok(Step::Done(out)) => {
                reporter.event(Event::Done {
                    id: job.id().into(),
                    elapsed: start.elapsed(),
                });
                return Outcome::Done(out);
            }
            Err(e) => {
                reporter.event(Event::Failed {
                    id: job.id().into(),
                    error: format!("{e:#}"),
                });
                return Outcome::Failed(e);
            }
            Ok(Step::Retry { after, reason }) => {
                *last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                (after, reason)
            }
            Ok(Step::Blocked { reason }) => {
                let idle = last_progress.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                if idle >= opts.stall_timeout {
                    let err = anyhow::Error::new(TimedOut {
                        job: job.id().into(),
                        waited: start.elapsed(),
                        reason: format!("blocked and nothing else is progressing: {reason}"),
                    });
                    reporter.event(Event::Failed {
                        id: job.id().into(),
                        error: format!("{err:#}"),
                    });
                    return Outcome::Failed(err);
                }
                let pause = blocked_pause;
                blocked_pause = (blocked_pause * 2).min(Duration::from_secs(10));
                (pause, reason)
            }
        };
        // A wait that would pass the deadline is cut to it, and the job is asked once more there: what became
        // ready meanwhile is not given up on early.
        let now = Instant::now();
        if now >= deadline {
            let err = anyhow::Error::new(TimedOut {
                job: job.id().into(),
                waited: start.elapsed(),
                reason,
            });
            reporter.event(Event::Failed {
                id: job.id().into(),
                error: format!("{err:#}"),
            });
            return Outcome::Failed(err);
        }
        reporter.event(Event::Waiting {
            id: job.id().into(),
            reason,
        });
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TestJob {
        id: String,
        deps: Vec<String>,
        /// Steps answered Retry before Done.
        retries: usize,
        calls: AtomicUsize,
        fail: bool,
        blocked_forever: bool,
        running: Arc<AtomicUsize>,
        max_running: Arc<AtomicUsize>,
        deadline: Duration,
    }

    fn job(id: &str, deps: &[&str]) -> TestJob {
        TestJob {
            id: id.into(),
            deps: deps.iter().map(|s| s.to_string()).collect(),
            retries: 0,
            calls: AtomicUsize::new(0),
            fail: false,
            blocked_forever: false,
            running: Arc::new(AtomicUsize::new(0)),
            max_running: Arc::new(AtomicUsize::new(0)),
            deadline: Duration::from_secs(60),
        }
    }

    #[async_trait]
    impl Job<String> for TestJob {
        fn id(&self) -> &str {
            &self.id
        }
        fn deps(&self) -> &[String] {
            &self.deps
        }
        fn deadline(&self) -> Duration {
            self.deadline
        }
        fn action(&self) -> String {
            "test".into()
        }
        async fn step(&self, inputs: &BTreeMap<String, String>) -> anyhow::Result<Step<String>> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                anyhow::bail!("boom");
            }
            if self.blocked_forever {
                return Ok(Step::Blocked { reason: "held".into() });
            }
            if n < self.retries {
                return Ok(Step::Retry {
                    after: Duration::from_millis(5),
                    reason: "pending".into(),
                });
            }
            let joined: Vec<String> = inputs.values().cloned().collect();
            Ok(Step::Done(format!("{}({})", self.id, joined.join(","))))
        }
    }

    fn arc(j: TestJob) -> Arc<dyn Job<String>> {
        Arc::new(j)
    }

    #[tokio::test]
    async fn outputs_flow_to_dependants() {
        let jobs = vec![arc(job("c", &["a", "b"])), arc(job("a", &[])), arc(job("b", &["a"]))];
        let out = run(jobs, &ExecOptions::default(), &Silent).await.unwrap();
        match &out["c"] {
            Outcome::Done(s) => assert_eq!(s, "c(a(),b(a()))"),
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..10)
            .map(|i| {
                let mut j = job(&format!("j{i}"), &[]);
                j.running = running.clone();
                j.max_running = max.clone();
                arc(j)
            })
            .collect();
        let opts = ExecOptions {
            concurrency: 3,
            ..Default::default()
        };
        run(jobs, &opts, &Silent).await.unwrap();
        assert_eq!(max.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retry_until_done_and_failure_skips_dependants() {
        let mut slow = job("slow", &[]);
        slow.retries = 3;
        let mut bad = job("bad", &[]);
        bad.fail = true;
        let jobs = vec![
            arc(slow),
            arc(bad),
            arc(job("child", &["bad"])),
            arc(job("grandchild", &["child"])),
        ];
        let out = run(jobs, &ExecOptions::default(), &Silent).await.unwrap();
        assert!(out["slow"].is_done());
        assert!(matches!(out["bad"], Outcome::Failed(_)));
        assert!(matches!(&out["child"], Outcome::Skipped { because_of } if because_of == "bad"));
        assert!(matches!(&out["grandchild"], Outcome::Skipped { because_of } if because_of == "child"));
    }

    #[tokio::test]
    async fn deadline_gives_a_timeout_error() {
        let mut j = job("nat", &[]);
        j.retries = usize::MAX;
        j.deadline = Duration::from_millis(60);
        let out = run(vec![arc(j)], &ExecOptions::default(), &Silent).await.unwrap();
        match &out["nat"] {
            Outcome::Failed(e) => {
                let t = e.downcast_ref::<TimedOut>().expect("a TimedOut");
                assert_eq!(t.job, "nat");
                assert!(e.to_string().contains("re-run"), "{e}");
            }
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn blocked_gives_up_when_nothing_progresses() {
        let mut j = job("subnet", &[]);
        j.blocked_forever = true;
        let opts = ExecOptions {
            stall_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let out = run(vec![arc(j)], &opts, &Silent).await.unwrap();
        assert!(matches!(&out["subnet"], Outcome::Failed(e) if e.to_string().contains("nothing else is progressing")));
    }

    /// Records the order in which jobs start.
    struct Ordered {
        id: String,
        deps: Vec<String>,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Job<()> for Ordered {
        fn id(&self) -> &str {
            &self.id
        }
        fn deps(&self) -> &[String] {
            &self.deps
        }
        fn deadline(&self) -> Duration {
            Duration::from_secs(5)
        }
        fn action(&self) -> String {
            "test".into()
        }
        async fn step(&self, _: &BTreeMap<String, ()>) -> anyhow::Result<Step<()>> {
            self.log.lock().unwrap().push(self.id.clone());
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Step::Done(()))
        }
    }

    #[tokio::test]
    async fn longest_chain_starts_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let j = |id: &str, deps: &[&str]| {
            Arc::new(Ordered {
                id: id.into(),
                deps: deps.iter().map(|d| d.to_string()).collect(),
                log: log.clone(),
            }) as Arc<dyn Job<()>>
        };
        // Declared leaf-first; with one slot, the head of the chain a -> b -> c must still go first.
        let jobs = vec![
            j("leaf1", &[]),
            j("leaf2", &[]),
            j("c", &["b"]),
            j("b", &["a"]),
            j("a", &[]),
        ];
        let opts = ExecOptions {
            concurrency: 1,
            ..Default::default()
        };
        run(jobs, &opts, &Silent).await.unwrap();
        assert_eq!(log.lock().unwrap()[0], "a");
    }

    #[test]
    fn cycles_and_unknown_deps_are_errors() {
        let jobs = vec![arc(job("a", &["b"])), arc(job("b", &["a"]))];
        assert!(matches!(topological_order(&jobs), Err(GraphError::Cycle(_))));
        let jobs = vec![arc(job("a", &["zz"]))];
        assert!(matches!(
            topological_order(&jobs),
            Err(GraphError::UnknownDependency { .. })
        ));
        let jobs = vec![
            arc(job("a", &[])),
            arc(job("b", &["a"])),
            arc(job("c", &["b"])),
            arc(job("d", &["a"])),
        ];
        assert_eq!(depth(&jobs).unwrap(), 3);
    }
}
