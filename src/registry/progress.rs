//! Progress of a push on stderr: one indicatif bar per uploading blob (bytes, rate, ETA) on a terminal; in CI logs
//! one plain line when a blob starts, retries and ends, with its size and rate.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::source::{Blob, human_bytes};

/// How a blob got to the registry.
#[derive(Debug, Clone)]
pub enum BlobOutcome {
    Present,
    Mounted(String),
    Uploaded(Duration),
}

pub trait PushProgress: Send + Sync {
    /// The blob needs uploading (not present, not mountable).
    fn blob_started(&self, blob: &Blob);
    /// An upload attempt begins (again from byte 0).
    fn blob_restart(&self, blob: &Blob);
    fn blob_sent(&self, digest: &str, bytes: u64);
    fn blob_retry(&self, blob: &Blob, attempt: usize, error: &str, wait: Duration);
    fn blob_done(&self, blob: &Blob, outcome: &BlobOutcome);
    fn blob_failed(&self, blob: &Blob, error: &str);
    fn note(&self, text: &str);
}

/// Bars on a terminal, lines otherwise, nothing with `-q`.
pub fn console(quiet: bool) -> std::sync::Arc<dyn PushProgress> {
    if quiet {
        std::sync::Arc::new(Silent)
    } else if std::io::stderr().is_terminal() {
        std::sync::Arc::new(Bars::new())
    } else {
        std::sync::Arc::new(Lines::new())
    }
}

pub struct Silent;

impl PushProgress for Silent {
    fn blob_started(&self, _: &Blob) {}
    fn blob_restart(&self, _: &Blob) {}
    fn blob_sent(&self, _: &str, _: u64) {}
    fn blob_retry(&self, _: &Blob, _: usize, _: &str, _: Duration) {}
    fn blob_done(&self, _: &Blob, _: &BlobOutcome) {}
    fn blob_failed(&self, _: &Blob, _: &str) {}
    fn note(&self, _: &str) {}
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn rate(bytes: u64, took: Duration) -> String {
    let secs = took.as_secs_f64().max(0.001);
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

/// `[   1.2s] layer sha256:0123456789ab (512.0 MiB): pushed in 3.1s (165.2 MiB/s)`
pub struct Lines {
    start: Instant,
}

impl Lines {
    pub fn new() -> Self {
        Lines { start: Instant::now() }
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

impl PushProgress for Lines {
    fn blob_started(&self, blob: &Blob) {
        self.line(&format!("{}: uploading", blob.label()));
    }
    fn blob_restart(&self, _: &Blob) {}
    fn blob_sent(&self, _: &str, _: u64) {}
    fn blob_retry(&self, blob: &Blob, attempt: usize, error: &str, wait: Duration) {
        self.line(&format!(
            "{}: try {attempt} failed ({}); retrying in {:.1}s",
            blob.label(),
            first_line(error),
            wait.as_secs_f64()
        ));
    }
    fn blob_done(&self, blob: &Blob, outcome: &BlobOutcome) {
        let what = match outcome {
            BlobOutcome::Present => "already present".to_string(),
            BlobOutcome::Mounted(from) => format!("mounted from {from}"),
            BlobOutcome::Uploaded(took) => {
                format!("pushed in {:.1}s ({})", took.as_secs_f64(), rate(blob.size, *took))
            }
        };
        self.line(&format!("{}: {what}", blob.label()));
    }
    fn blob_failed(&self, blob: &Blob, error: &str) {
        self.line(&format!("{}: FAILED: {}", blob.label(), first_line(error)));
    }
    fn note(&self, text: &str) {
        self.line(text);
    }
}

/// One bar per uploading blob.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl PushProgress for Bars {
    fn blob_started(&self, blob: &Blob) {
        let bar = self.multi.add(ProgressBar::new(blob.size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:28}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(blob.label());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(blob.digest.clone(), bar);
    }
    fn blob_restart(&self, blob: &Blob) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(&blob.digest) {
            bar.reset();
        }
    }
    fn blob_sent(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
            bar.inc(bytes);
        }
    }
    fn blob_retry(&self, blob: &Blob, attempt: usize, error: &str, wait: Duration) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(&blob.digest) {
            bar.set_message(format!(
                "try {attempt} failed ({}); retrying in {:.1}s",
                first_line(error),
                wait.as_secs_f64()
            ));
        }
    }
    fn blob_done(&self, blob: &Blob, outcome: &BlobOutcome) {
        let bar = self.bars.lock().unwrap_or_else(|e| e.into_inner()).remove(&blob.digest);
        match (bar, outcome) {
            (Some(bar), BlobOutcome::Uploaded(took)) => {
                bar.set_style(ProgressStyle::with_template("✓ {prefix}: {msg}").expect("valid template"));
                bar.finish_with_message(format!(
                    "pushed in {:.1}s ({})",
                    took.as_secs_f64(),
                    rate(blob.size, *took)
                ));
            }
            (_, BlobOutcome::Present) => {
                let _ = self.multi.println(format!("✓ {}: already present", blob.label()));
            }
            (_, BlobOutcome::Mounted(from)) => {
                let _ = self.multi.println(format!("✓ {}: mounted from {from}", blob.label()));
            }
            (None, BlobOutcome::Uploaded(_)) => {}
        }
    }
    fn blob_failed(&self, blob: &Blob, error: &str) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).remove(&blob.digest) {
            bar.set_style(ProgressStyle::with_template("✗ {prefix}: {msg}").expect("valid template"));
            bar.abandon_with_message(format!("FAILED: {}", first_line(error)));
        }
    }
    fn note(&self, text: &str) {
        let _ = self.multi.println(text);
    }
}
