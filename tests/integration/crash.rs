//! A create killed with SIGKILL right after AWS acted on a call (the client never learned the new id), then run
//! again: exactly one of everything, nothing orphaned. moto ignores ClientToken, so only find-by-tag saves us.

use crate::support::{TestEnv, example, s};

fn kill_at(env: &TestEnv, spec: &str, nth_mutating_call: usize) {
    env.proxy.reset();
    let mut child = env.spawn_until_held(
        nth_mutating_call,
        &["create", "cluster", "-f", spec, "--phase", "network", "-q"],
    );
    child.kill().unwrap(); // SIGKILL: no cleanup, the lock file stays behind
    child.wait().unwrap();
    // What the killed run had sent reaches AWS before the re-run looks (a create still in flight when the re-run
    // lists is the separate race of issue 18).
    env.proxy.wait_forwarded();
    env.proxy.reset();
}

#[test]
fn create_killed_at_several_points_converges_on_rerun() {
    let env = TestEnv::new();
    let spec = example("eks-gpu-spot.yaml");
    let spec = s(&spec);
    let mut expected = None;
    // Points across the run: the VPC, early subnets and EIPs, NAT gateways, the last routes. The network phase
    // of this example makes 34 mutating calls.
    for point in [1, 6, 15, 24, 30, 34] {
        crate::support::moto::shared().reset();
        kill_at(&env, spec, point);
        let rerun = env.ok(&["create", "cluster", "-f", spec, "--phase", "network", "-q"]);
        assert!(rerun.stdout.contains("nat/us-west-2c"), "{}", rerun.stdout);
        let tagged = env.tagged("ml-gpu", "us-west-2");
        let all = env.all_non_default("us-west-2");
        assert_eq!(tagged["vpc"], 1, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["subnet"], 6, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["nat-gateway"], 3, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["elastic-ip"], 3, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["internet-gateway"], 1, "kill at {point}: {tagged:?}");
        assert_eq!(tagged["route-table"], 4, "kill at {point}: {tagged:?}");
        // Untagged leftovers would show up as a difference between all and tagged.
        for kind in [
            "vpc",
            "subnet",
            "nat-gateway",
            "elastic-ip",
            "internet-gateway",
            "route-table",
        ] {
            assert_eq!(
                all[kind], tagged[kind],
                "kill at {point}: orphaned {kind}: all {all:?} tagged {tagged:?}"
            );
        }
        let plan = env.run(&["plan", "-f", spec, "--phase", "network", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "kill at {point}: converged: {}", plan.stdout);
        match &expected {
            None => expected = Some(tagged),
            Some(e) => assert_eq!(e, &tagged),
        }
    }
}

#[test]
fn number_of_mutating_calls_matches_the_kill_points() {
    // Guards the kill points above: if the network phase grows or shrinks, the points must move with it.
    let env = TestEnv::new();
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&example("eks-gpu-spot.yaml")),
        "--phase",
        "network",
        "-q",
    ]);
    let n = env.proxy.calls().iter().filter(|c| c.is_mutating()).count();
    assert_eq!(n, 34, "mutating calls of the network phase");
}
