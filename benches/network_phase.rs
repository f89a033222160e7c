//! Benchmark: network-phase create with 100 ms added to every AWS call (moto behind the test proxy).
//!
//! Prints wall time ÷ (dependency depth × 100 ms), where depth counts the rounds of calls a create needs at best:
//! one round to observe (every kind listed at once) plus the longest chain of resources. Target ≤ 1.3. Also runs
//! the same create with `--concurrency 1`, the sequential baseline, in the same run. Run it with bench/network-phase.

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
    let spec = example("eks-gpu-spot.yaml");
    let cluster = kforge::model::load_cluster(&spec, None).expect("example loads");
    let resources = kforge::providers::resources(&cluster, &[kforge::engine::Phase::Network]);
    let chain = kforge::engine::graph_depth(&resources).expect("acyclic");
    let rounds = chain + 1;

    let env = TestEnv::new();
    let time_create = |extra: &[&str]| -> f64 {
        support::moto::shared().reset();
        env.proxy.reset();
        env.proxy.set_latency(LATENCY);
        let _ = std::fs::remove_dir_all(env.state_dir());
        let mut args = vec!["create", "cluster", "-f", s(&spec), "--phase", "network", "-q"];
        args.extend_from_slice(extra);
        let start = Instant::now();
        env.ok(&args);
        start.elapsed().as_secs_f64()
    };
    let parallel: Vec<f64> = (0..RUNS).map(|_| time_create(&[])).collect();
    let sequential = time_create(&["--concurrency", "1"]);
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
    println!("  sequential baseline (-j 1)      {:>8.0} ms", sequential * 1000.0);
    println!(
        "  wall / (depth x 100 ms)         {:>8.2}     (target <= 1.3)",
        wall / ideal
    );
    println!("  speed-up over sequential        {:>8.1}x", sequential / wall);
}
