//! Benchmark: the infrastructure of examples/selfbuilt-ha.yaml (network, security, cluster phases) created and
//! deleted against moto with 0 %, 20 % and 30 % of AWS calls answered with throttling or 503 errors by the test
//! proxy (never forwarded, as a real throttle does not execute the call).
//!
//! Prints each run's wall time, the ratio to the clean run of the same round (target: 30 % within 3x), the calls
//! that reached moto (must not grow with the fault rate: retries cost attempts, not extra work) and the attempts the
//! proxy refused. Run it with bench/throttled-create.

#[allow(dead_code)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::Instant;

use support::{TestEnv, example, s};

/// Runs per fault rate (median reported); `KFORGE_BENCH_RUNS` overrides (a slow policy takes minutes per run).
fn runs() -> usize {
    std::env::var("KFORGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Run {
    create: f64,
    delete: f64,
    forwarded: usize,
    refused: usize,
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let spec = example("selfbuilt-ha.yaml");
    let env = TestEnv::new();
    let run = |fault: f64| -> Run {
        support::moto::shared().reset();
        env.proxy.reset();
        let _ = std::fs::remove_dir_all(env.state_dir());
        env.proxy.set_fault_rate(fault);
        let start = Instant::now();
        env.ok(&[
            "create",
            "cluster",
            "-f",
            s(&spec),
            "--host-key-timeout",
            "120s",
            "--phase",
            "network,security,cluster",
            "-q",
        ]);
        let create = start.elapsed().as_secs_f64();
        let start = Instant::now();
        env.ok(&["delete", "cluster", "-f", s(&spec), "--yes", "-q"]);
        let delete = start.elapsed().as_secs_f64();
        let calls = env.proxy.calls();
        let refused = calls.iter().filter(|c| c.faulted).count();
        Run {
            create,
            delete,
            forwarded: calls.len() - refused,
            refused,
        }
    };
    println!("examples/selfbuilt-ha.yaml infrastructure (network, security, cluster), create then delete");
    println!("  fault rate   create s   x clean   delete s   x clean   calls to moto   refused attempts");
    let mut clean = (Vec::new(), Vec::new());
    let rows: Vec<(f64, Vec<Run>)> = [0.0, 0.2, 0.3]
        .into_iter()
        .map(|fault| (fault, (0..runs()).map(|_| run(fault)).collect()))
        .collect();
    for (fault, runs) in &rows {
        let create = median(runs.iter().map(|r| r.create).collect());
        let delete = median(runs.iter().map(|r| r.delete).collect());
        if *fault == 0.0 {
            clean = (vec![create], vec![delete]);
        }
        println!(
            "  {:>9.0} %   {create:>8.1}   {:>7.2}   {delete:>8.1}   {:>7.2}   {:>13}   {:>16}",
            fault * 100.0,
            create / clean.0[0],
            delete / clean.1[0],
            median(runs.iter().map(|r| r.forwarded as f64).collect()),
            median(runs.iter().map(|r| r.refused as f64).collect()),
        );
    }
}
