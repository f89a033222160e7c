//! Progress of long runs: a spinner per running resource on a terminal, one plain line per event otherwise
//! (CI logs stay readable and ordered). Progress goes to stderr; stdout carries only results.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
pub enum Event {
    Started {
        id: String,
        action: String,
    },
    Waiting {
        id: String,
        reason: String,
    },
    Done {
        id: String,
        elapsed: Duration,
    },
    Failed {
        id: String,
        error: String,
    },
    Skipped {
        id: String,
        because_of: String,
    },
    /// A free-form line ("plan: 3 to create").
    Note(String),
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}

/// Reports nothing (`-q`, and internal walks such as observing).
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event) {}
}

/// Chooses bars or lines by whether stderr is a terminal.
pub fn console(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::new())
    }
}

/// Plain lines, `[  12.3s] subnet/public-us-east-1a: create done (0.4s)`.
pub struct Lines {
    start: Instant,
    actions: Mutex<BTreeMap<String, String>>,
}

impl Lines {
    pub fn new() -> Self {
        Lines {
            start: Instant::now(),
            actions: Mutex::new(BTreeMap::new()),
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{:>7.1}s] {text}", self.start.elapsed().as_secs_f64());
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Lines {
    fn event(&self, event: Event) {
        let mut actions = self.actions.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started { id, action } => {
                // Checks of unchanged resources are noise in a log; only actions are worth a line.
                if action != "check" {
                    self.line(&format!("{id}: {action}..."));
                }
                actions.insert(id, action);
            }
            Event::Waiting { id, reason } => self.line(&format!("{id}: waiting: {reason}")),
            Event::Done { id, elapsed } => {
                let action = actions.get(&id).cloned().unwrap_or_default();
                if action != "check" {
                    self.line(&format!("{id}: {action} done ({:.1}s)", elapsed.as_secs_f64()));
                }
            }
            Event::Failed { id, error } => self.line(&format!("{id}: FAILED: {}", first_line(&error))),
            Event::Skipped { id, because_of } => self.line(&format!("{id}: skipped ({because_of} did not finish)")),
            Event::Note(text) => self.line(&text),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// One spinner per running resource.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, (ProgressBar, String)>>,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Bars {
    fn event(&self, event: Event) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started { id, action } => {
                if action == "check" {
                    return;
                }
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]").expect("valid template"),
                );
                bar.set_prefix(id.clone());
                bar.set_message(format!("{action}..."));
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(id, (bar, action));
            }
            Event::Waiting { id, reason } => {
                if let Some((bar, action)) = bars.get(&id) {
                    bar.set_message(format!("{action}: {reason}"));
                }
            }
            Event::Done { id, elapsed } => {
                if let Some((bar, action)) = bars.remove(&id) {
                    bar.set_style(ProgressStyle::with_template("✓ {prefix}: {msg}").expect("valid template"));
                    bar.finish_with_message(format!("{action} done ({:.1}s)", elapsed.as_secs_f64()));
                }
            }
            Event::Failed { id, error } => {
                let msg = format!("FAILED: {}", first_line(&error));
                match bars.remove(&id) {
                    Some((bar, _)) => {
                        bar.set_style(ProgressStyle::with_template("✗ {prefix}: {msg}").expect("valid template"));
                        bar.finish_with_message(msg);
                    }
                    None => {
                        let _ = self.multi.println(format!("✗ {id}: {msg}"));
                    }
                }
            }
            Event::Skipped { id, because_of } => {
                let _ = self
                    .multi
                    .println(format!("- {id}: skipped ({because_of} did not finish)"));
            }
            Event::Note(text) => {
                let _ = self.multi.println(text);
            }
        }
    }
}
