//! The `kforge` binary: parse arguments, run the command on an explicit tokio runtime, print the error chain
//! once, and exit with a documented code (see `kforge --help`).

use std::process::ExitCode;

use clap::Parser;
use kforge::app::{self, Finished, Interrupted, RunTimedOut};
use kforge::cli::Cli;
use kforge::engine::executor::TimedOut;
use kforge::state::StateError;

const EXIT_FAILURE: u8 = 1;
const EXIT_CHANGES: u8 = 2;
const EXIT_LOCKED: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;
const EXIT_ROLLED_BACK: u8 = 5;
const EXIT_USAGE: u8 = 64;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(app::run(cli));
    let (calls, attempts, busy) = kforge::aws::call_counts();
    if calls > 0 {
        // At -v: what retries cost this run (issue: heavy throttling made runs slow).
        tracing::info!(
            "AWS: {calls} calls, {} retried attempts ({busy} answered throttled or unavailable)",
            attempts.saturating_sub(calls)
        );
    }
    match result {
        Ok(Finished::Ok) => ExitCode::SUCCESS,
        Ok(Finished::Changes) => ExitCode::from(EXIT_CHANGES),
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The chain once, outermost first, without repeating messages that already contain their cause.
fn render_error(e: &anyhow::Error) -> String {
    kforge::errors::render(e.as_ref())
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if matches!(cause.downcast_ref::<StateError>(), Some(StateError::Locked { .. })) {
            return EXIT_LOCKED;
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return EXIT_INTERRUPTED;
        }
        if cause.downcast_ref::<kforge::ecs::RolledBack>().is_some() {
            return EXIT_ROLLED_BACK;
        }
    }
    if e.chain().any(|c| {
        c.downcast_ref::<TimedOut>().is_some()
            || c.downcast_ref::<RunTimedOut>().is_some()
            || c.downcast_ref::<kforge::providers::hosts::HostKeysTimedOut>().is_some()
    }) {
        return EXIT_TIMEOUT;
    }
    EXIT_FAILURE
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "kforge=info",
        (_, 2) => "kforge=debug,aws_smithy_runtime=debug",
        // The SDK's signer traces canonical requests and its orchestrator whole signed requests, session-token
        // header included: neither is printed at any verbosity.
        _ => "trace,aws_sigv4=off,aws_smithy_runtime::client::orchestrator=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: CI logs get plain WARN lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_what_happened() {
        let rolled_back = anyhow::Error::new(kforge::ecs::RolledBack("the deployment failed".into()));
        assert_eq!(exit_code(&rolled_back.context("deploying web")), EXIT_ROLLED_BACK);
        let deadline = anyhow::Error::new(kforge::engine::executor::TimedOut {
            job: "service web".into(),
            waited: std::time::Duration::from_secs(600),
            reason: "still draining".into(),
        });
        assert_eq!(exit_code(&deadline.context("deleting web")), EXIT_TIMEOUT);
        // The words alone decide nothing: an SSH connect that gave up is a failure, not a deadline of the run.
        assert_eq!(
            exit_code(&anyhow::anyhow!("m1: connect: refused (gave up after 60s)")),
            EXIT_FAILURE
        );
        assert_eq!(exit_code(&anyhow::anyhow!("AccessDenied")), EXIT_FAILURE);
    }
}
