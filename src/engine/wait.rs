//! One way to wait: a probe answers [`Step`] (done, retry after a pause, blocked on something else) and [`Wait`]
//! asks again until it is done or the deadline passes, which is a typed [`TimedOut`] (exit code 4), never words
//! in a message. The engine's jobs answer the same `Step`; this is the same contract for the waits outside a
//! graph (a drain, an Auto Scaling group settling, an etcd member turning healthy).

use std::future::Future;
use std::time::{Duration, Instant};

use super::executor::{Step, TimedOut};
use crate::progress::{Event, Reporter};

/// A wait for `job` of at most `deadline`; `poll` is the pause after a `Blocked` answer (a `Retry` names its own).
pub struct Wait<'a> {
    job: String,
    deadline: Duration,
    poll: Duration,
    reporter: Option<&'a dyn Reporter>,
}

/// What a blocking wait ended with when it did not finish: the probe's own error, or the deadline.
#[derive(Debug)]
pub enum Waited<E> {
    Failed(E),
    TimedOut(TimedOut),
}

impl<E> Waited<E> {
    /// The probe's error, or `timed_out` made of the deadline.
    pub fn or_timed_out(self, timed_out: impl FnOnce(TimedOut) -> E) -> E {
        match self {
            Waited::Failed(e) => e,
            Waited::TimedOut(t) => timed_out(t),
        }
    }
}

impl<'a> Wait<'a> {
    pub fn new(job: impl Into<String>, deadline: Duration) -> Wait<'a> {
        Wait {
            job: job.into(),
            deadline,
            poll: Duration::from_secs(2),
            reporter: None,
        }
    }

    /// The pause after a `Blocked` answer.
    pub fn poll(mut self, poll: Duration) -> Wait<'a> {
        self.poll = poll;
        self
    }

    /// Reports each pause as an [`Event::Waiting`] of the job, with the probe's reason.
    pub fn reporting(mut self, reporter: &'a dyn Reporter) -> Wait<'a> {
        self.reporter = Some(reporter);
        self
    }

    /// The pause before asking again, cut short so that the last question is asked at the deadline; `None` once
    /// the deadline has passed (the wait started at `started`).
    fn pause(&self, started: Instant, step_after: Option<Duration>) -> Option<Duration> {
        let left = self.deadline.checked_sub(started.elapsed()).filter(|l| !l.is_zero())?;
        Some(step_after.unwrap_or(self.poll).min(left))
    }

    fn timed_out(&self, reason: String) -> TimedOut {
        TimedOut {
            job: self.job.clone(),
            waited: self.deadline,
            reason,
        }
    }

    /// Asks `probe` until it is done; its error ends the wait at once; the deadline is a [`TimedOut`].
    pub async fn until<T, F, Fut>(self, mut probe: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Step<T>>>,
    {
        let started = Instant::now();
        loop {
            let (after, reason) = match probe().await? {
                Step::Done(v) => return Ok(v),
                Step::Retry { after, reason } => (Some(after), reason),
                Step::Blocked { reason } => (None, reason),
            };
            let Some(pause) = self.pause(started, after) else {
                return Err(self.timed_out(reason).into());
            };
            if let Some(r) = self.reporter {
                r.event(Event::Waiting {
                    id: self.job.clone(),
                    reason,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// [`Wait::until`] for blocking code (the bootstrap's SSH steps run on blocking threads): the probe keeps its
    /// own error type.
    pub fn until_blocking<T, E>(self, mut probe: impl FnMut() -> Result<Step<T>, E>) -> Result<T, Waited<E>> {
        let started = Instant::now();
        loop {
            let (after, reason) = match probe().map_err(Waited::Failed)? {
                Step::Done(v) => return Ok(v),
                Step::Retry { after, reason } => (Some(after), reason),
                Step::Blocked { reason } => (None, reason),
            };
            let Some(pause) = self.pause(started, after) else {
                return Err(Waited::TimedOut(self.timed_out(reason)));
            };
            std::thread::sleep(pause);
        }
    }
}

/// `Retry` after `after` with `reason`: the usual "not yet".
pub fn not_yet<T>(after: Duration, reason: impl Into<String>) -> Step<T> {
    Step::Retry {
        after,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_the_probe_is_done() {
        let mut asked = 0;
        let got = Wait::new("thing", Duration::from_secs(5))
            .until(|| {
                asked += 1;
                let n = asked;
                async move {
                    Ok(if n < 3 {
                        not_yet(Duration::from_millis(5), "starting")
                    } else {
                        Step::Done(n)
                    })
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn a_deadline_is_a_typed_timeout_with_the_last_reason() {
        let err = Wait::new("service web", Duration::from_millis(12))
            .until(|| async { Ok(not_yet::<()>(Duration::from_millis(5), "still draining")) })
            .await
            .unwrap_err();
        let t = err.downcast_ref::<TimedOut>().expect("a deadline, not a failure");
        assert_eq!((t.job.as_str(), t.reason.as_str()), ("service web", "still draining"));
    }

    #[tokio::test]
    async fn a_probe_error_ends_the_wait_at_once() {
        let mut asked = 0;
        let err = Wait::new("thing", Duration::from_secs(600))
            .until(|| {
                asked += 1;
                async { Err::<Step<()>, _>(anyhow::anyhow!("AccessDenied")) }
            })
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<TimedOut>().is_none());
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_blocking_wait_keeps_the_probes_error_type() {
        let mut asked = 0;
        let r: Result<(), Waited<&str>> = Wait::new("m1", Duration::from_millis(30))
            .poll(Duration::from_millis(10))
            .until_blocking(|| {
                asked += 1;
                if asked < 2 {
                    Ok(Step::Blocked {
                        reason: "leader".into(),
                    })
                } else {
                    Err("refused")
                }
            });
        assert!(matches!(r, Err(Waited::Failed("refused"))));
        let r: Result<(), Waited<&str>> = Wait::new("m1", Duration::from_millis(30))
            .poll(Duration::from_millis(10))
            .until_blocking(|| {
                Ok(Step::Blocked {
                    reason: "1 of 3 healthy".into(),
                })
            });
        match r {
            Err(Waited::TimedOut(t)) => assert_eq!(t.reason, "1 of 3 healthy"),
            other => panic!("{other:?}"),
        }
    }
}
