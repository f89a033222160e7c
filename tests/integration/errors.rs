//! Cloud failures as the user sees them: the resource, the AWS operation and error code, and a hint; independent
//! resources still converge and a later run continues.

use crate::support::{TestEnv, s, write_spec};

#[test]
fn an_aws_rejection_names_resource_operation_and_code() {
    let env = TestEnv::new();
    let spec = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: badzone}\nspec:\n  provider: eks\n  region: us-east-1\n  network: {zones: [us-east-1a, us-east-1q]}\n";
    let spec = write_spec(env.dir.path(), "badzone.yaml", spec);
    let o = env.run(&["create", "cluster", "-f", s(&spec), "--phase", "network"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("subnet/private-us-east-1q: CreateSubnet failed: InvalidParameterValue"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("hint: AWS rejected a value"), "{}", o.stderr);
    assert!(
        o.stdout.contains("skipped (subnet/public-us-east-1q failed)"),
        "dependants are skipped:\n{}",
        o.stdout
    );
    // What did not depend on the bad zone was built, and the record says the run failed.
    assert_eq!(env.tagged("badzone", "us-east-1")["subnet"], 2);
    let got = env.ok(&["get", "clusters"]);
    assert!(got.stdout.contains("failed"), "{}", got.stdout);

    // Fixed spec: the next run creates only what is missing.
    let fixed = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("us-east-1q", "us-east-1b");
    let fixed = write_spec(env.dir.path(), "fixed.yaml", &fixed);
    let o = env.run(&["apply", "-f", s(&fixed), "--phase", "network"]);
    // The route table of the bad zone is no longer wanted: it is deleted, not left behind.
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("rtb/private-us-east-1q"), "{}", o.stdout);
    let tagged = env.tagged("badzone", "us-east-1");
    assert_eq!((tagged["subnet"], tagged["route-table"]), (4, 3), "{tagged:?}");
}

#[test]
fn an_unreachable_endpoint_says_so() {
    let env = TestEnv::new();
    let spec = crate::support::example("eks-minimal.yaml");
    let o = env
        .kforge()
        .args([
            "plan",
            "-f",
            s(&spec),
            "--phase",
            "network",
            "--endpoint-url",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed: ConnectionError"), "{stderr}");
    assert!(stderr.contains("hint: AWS could not be reached"), "{stderr}");
}

#[test]
fn delete_no_wait_returns_and_a_second_delete_finishes() {
    let env = TestEnv::new();
    let spec = crate::support::example("eks-minimal.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network", "-q"]);
    let o = env.ok(&["delete", "cluster", "eks-minimal", "--yes", "--no-wait", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let nat = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "nat-gateway")
        .unwrap();
    assert_eq!(
        nat["result"], "deleting",
        "the NAT gateway's deletion was requested, not waited for"
    );
    env.ok(&["delete", "cluster", "eks-minimal", "--yes"]);
    assert!(env.tagged("eks-minimal", "us-east-1").values().all(|n| *n == 0));
}

#[test]
fn timeout_is_a_hard_deadline_that_releases_the_lock() {
    let env = TestEnv::new();
    // AWS acts on the first mutating call and then never answers.
    env.proxy.hold_at(1);
    let spec = crate::support::example("eks-minimal.yaml");
    let started = std::time::Instant::now();
    let o = env.run(&[
        "create",
        "cluster",
        "-f",
        s(&spec),
        "--phase",
        "network",
        "--timeout",
        "2s",
    ]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains("gave up after 2s (--timeout)"), "{}", o.stderr);
    assert!(o.stderr.contains("re-run the same command"), "{}", o.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "stopped at the deadline"
    );
    assert!(
        !env.state_dir().join("clusters/eks-minimal/lock").exists(),
        "lock released"
    );
    env.proxy.reset();
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", "network", "-q"]);
    assert_eq!(
        env.tagged("eks-minimal", "us-east-1")["vpc"],
        1,
        "the re-run converged on the held VPC"
    );
}
