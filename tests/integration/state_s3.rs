//! The s3:// state store: records kept in the bucket, and the lock (an S3 conditional write) keeping two applies
//! of one cluster apart.

use crate::support::{TestEnv, example, rt, s};

const BUCKET: &str = "kforge-state";

fn bucket(env: &TestEnv) {
    rt().block_on(async { env.s3().create_bucket().bucket(BUCKET).send().await.unwrap() });
}

fn lock_exists(env: &TestEnv) -> bool {
    rt().block_on(async {
        env.s3()
            .head_object()
            .bucket(BUCKET)
            .key("team/clusters/eks-minimal/lock")
            .send()
            .await
            .is_ok()
    })
}

#[test]
fn second_apply_fails_on_the_lock_and_the_lock_is_released_after() {
    let env = TestEnv::new();
    bucket(&env);
    let state = format!("s3://{BUCKET}/team");
    let spec = example("eks-minimal.yaml");
    let spec = s(&spec);

    // First apply: hold its third mutating EC2 call, so it sits inside the lock.
    let mut first = env.spawn_until_held(3, &["apply", "-f", spec, "--phase", "network", "--state", &state, "-q"]);
    assert!(lock_exists(&env), "the lock object exists while applying");

    let second = env.run(&["apply", "-f", spec, "--phase", "network", "--state", &state]);
    assert_eq!(second.code, 3, "the second apply fails on the lock: {}", second.stderr);
    assert!(
        second
            .stderr
            .contains("cluster eks-minimal is locked by `kforge apply`"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("--force-unlock"), "{}", second.stderr);
    let delete = env.run(&["delete", "cluster", "eks-minimal", "--yes", "--state", &state]);
    assert_eq!(delete.code, 3, "delete honours the lock too: {}", delete.stderr);

    // The first run dies holding the lock. Its process is gone, so the next run on this machine takes over.
    first.kill().unwrap();
    first.wait().unwrap();
    env.proxy.reset();
    assert!(lock_exists(&env));
    env.ok(&["apply", "-f", spec, "--phase", "network", "--state", &state]);
    assert!(!lock_exists(&env), "released on exit");

    let o = env.ok(&["get", "clusters", "--state", &state]);
    assert!(
        o.stdout.contains("eks-minimal") && o.stdout.contains("network"),
        "{}",
        o.stdout
    );
    env.ok(&["delete", "cluster", "eks-minimal", "--yes", "--state", &state]);
    let o = env.ok(&["get", "clusters", "--state", &state]);
    assert!(o.stdout.contains("no clusters"), "{}", o.stdout);
}

#[test]
fn a_live_foreign_lock_needs_force_unlock() {
    let env = TestEnv::new();
    bucket(&env);
    let state = format!("s3://{BUCKET}/team");
    // A lock held by a run on another machine: never taken over silently.
    let foreign = serde_json::json!({
        "id": "other", "host": "ci-runner-7", "pid": 1, "command": "kforge apply", "acquiredAt": "2026-11-23T10:00:00Z"
    });
    rt().block_on(async {
        env.s3()
            .put_object()
            .bucket(BUCKET)
            .key("team/clusters/eks-minimal/lock")
            .body(foreign.to_string().into_bytes().into())
            .send()
            .await
            .unwrap()
    });
    let spec = example("eks-minimal.yaml");
    let o = env.run(&["apply", "-f", s(&spec), "--phase", "network", "--state", &state]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("pid 1 on ci-runner-7"), "{}", o.stderr);
    env.ok(&[
        "apply",
        "-f",
        s(&spec),
        "--phase",
        "network",
        "--state",
        &state,
        "--force-unlock",
    ]);
    assert!(!lock_exists(&env));
    env.ok(&["delete", "cluster", "eks-minimal", "--yes", "--state", &state]);
}
