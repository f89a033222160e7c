//! AWS misbehaving: 10% of calls throttled or failing with 503 (never executed, as AWS does), plus latency.
//! Create and delete still succeed, thanks to the SDK's retries and kforge's idempotent steps.

use std::time::Duration;

use crate::support::{TestEnv, example, s};

#[test]
fn create_and_delete_succeed_with_ten_percent_of_calls_failing() {
    let env = TestEnv::new();
    env.proxy.set_fault_rate(0.10);
    env.proxy.set_latency(Duration::from_millis(5));
    let spec = example("eks-gpu-spot.yaml");
    let created = env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network", "-v"]);
    // -v ends with what the retries cost: calls, retried attempts, throttled/unavailable answers.
    let summary = created
        .stderr
        .lines()
        .find(|l| l.contains("AWS: ") && l.contains(" calls, "))
        .unwrap_or_else(|| panic!("no call summary at -v: {}", created.stderr));
    let retried: u64 = summary
        .split(" calls, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    let faulted = env.proxy.calls().iter().filter(|c| c.faulted).count() as u64;
    assert!(
        retried > 0 && retried >= faulted,
        "each of the {faulted} injected faults was retried: {summary}"
    );
    let tagged = env.tagged("ml-gpu", "us-west-2");
    assert_eq!(
        (tagged["vpc"], tagged["subnet"], tagged["nat-gateway"]),
        (1, 6, 3),
        "{tagged:?}"
    );
    env.ok(&["delete", "cluster", "ml-gpu", "--region", "us-west-2", "--yes"]);
    assert!(env.tagged("ml-gpu", "us-west-2").values().all(|n| *n == 0));

    let calls = env.proxy.calls();
    let faulted = calls.iter().filter(|c| c.faulted).count();
    assert!(
        faulted >= 5,
        "the proxy really injected faults: {faulted} of {}",
        calls.len()
    );
}
