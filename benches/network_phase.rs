//! Benchmark: network-phase create with 100 ms added to every AWS call (moto behind the test proxy).
//!
//! Prints wall time ÷ (dependency depth × 100 ms), where depth counts the rounds of calls a create needs at best:
//! one round to observe (every kind listed at once) plus the longest chain of resources. Target ≤ 1.3. In the same
//! run: the sequential baseline (`--concurrency 1`), and the create with no added latency, which shows what the
//! emulator's one-request-at-a-time processing adds (AWS serves calls in parallel; moto does not).
//! Run it with bench/network-phase.

#[allow(dead_code)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{TestEnv, example, s};

const LATENCY: Duration = Duration::from_millis(100);
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let spec = example("eks-gpu-spot.yaml");
    let cluster = kforge::model::load_cluster(&spec, None).expect("example loads");
    let resources = kforge::providers::resources(&cluster, &[kforge::engine::Phase::Network]);
    let chain = kforge::engine::graph_depth(&resources).expect("acyclic");
    let rounds = chain + 1;

    let env = TestEnv::new();
    // (wall, from spawn to the first call, from the last answer to exit), in seconds
    let time_create = |latency: Duration, extra: &[&str]| -> (f64, f64, f64) {
        support::moto::shared().reset();
        env.warm(cluster.region().expect("cloud example has a region"));
        env.proxy.reset();
        env.proxy.set_latency(latency);
        let _ = std::fs::remove_dir_all(env.state_dir());
        let mut args = vec!["create", "cluster", "-f", s(&spec), "--phase", "network", "-q"];
        args.extend_from_slice(extra);
        let start = Instant::now();
        env.ok(&args);
        let end = Instant::now();
        let calls = env.proxy.calls();
        let first = calls.iter().map(|c| c.received).min().expect("some calls");
        let last = calls.iter().map(|c| c.answered).max().expect("some calls");
        (
            (end - start).as_secs_f64(),
            (first - start).as_secs_f64(),
            (end - last).as_secs_f64(),
        )
    };
    let runs: Vec<(f64, f64, f64)> = (0..RUNS).map(|_| time_create(LATENCY, &[])).collect();
    let parallel: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let startup = median(runs.iter().map(|r| r.1).collect());
    let tail = median(runs.iter().map(|r| r.2).collect());
    let sequential = time_create(LATENCY, &["--concurrency", "1"]).0;
    // The emulator answers one request at a time: a level of a dozen concurrent creates queues behind itself.
    // The same create without added latency shows that queueing plus kforge's own time.
    let unloaded = median((0..RUNS).map(|_| time_create(Duration::ZERO, &[]).0).collect());
    let calls = env.proxy.calls().len();

    let wall = median(parallel.clone());
    let ideal = rounds as f64 * LATENCY.as_secs_f64();
    println!(
        "network-phase create, examples/eks-gpu-spot.yaml ({} resources, {calls} AWS calls)",
        resources.len()
    );
    println!(
        "  added latency per AWS call      {:>8.0} ms",
        LATENCY.as_secs_f64() * 1000.0
    );
    println!("  dependency depth                {rounds:>8} rounds (observe + chain of {chain} resources)");
    println!(
        "  wall time, median of {RUNS}         {:>8.0} ms   (runs: {:?})",
        wall * 1000.0,
        parallel.iter().map(|t| (t * 1000.0).round() as u64).collect::<Vec<_>>()
    );
    println!(
        "    of which before the first call {:>8.0} ms   (process start, config, spec, lock)",
        startup * 1000.0
    );
    println!(
        "    of which after the last answer {:>8.0} ms   (state record, lock release, exit)",
        tail * 1000.0
    );
    println!("  sequential baseline (-j 1)      {:>8.0} ms", sequential * 1000.0);
    println!(
        "  wall / (depth x 100 ms)         {:>8.2}     (target <= 1.3)",
        wall / ideal
    );
    println!("  speed-up over sequential        {:>8.1}x", sequential / wall);
    println!(
        "  same create, no added latency   {:>8.0} ms   (emulator queueing + kforge)",
        unloaded * 1000.0
    );
    println!(
        "  (wall - that) / (depth x 100 ms){:>8.2}     (what the latency itself costs against the ideal)",
        (wall - unloaded) / ideal
    );
}
