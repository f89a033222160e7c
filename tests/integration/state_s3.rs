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

/// A lock of this machine whose process is gone (what a SIGKILLed run leaves).
fn stale_lock(round: usize) -> Vec<u8> {
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    serde_json::to_vec(&serde_json::json!({
        "id": format!("dead-{round}"), "host": host.trim(), "pid": pid, "command": "kforge apply",
        "acquiredAt": "2026-11-23T10:00:00Z"
    }))
    .unwrap()
}

/// Two applies started together over a stale lock, 20 rounds for each store: exactly one proceeds each time and
/// the other exits 3 naming the winner as the holder (taking over is atomic: S3 conditional on the stale lock's
/// ETag, local under a flock).
#[test]
fn two_applies_racing_over_a_stale_lock_have_exactly_one_winner() {
    let env = TestEnv::new();
    bucket(&env);
    let spec = example("eks-minimal.yaml");
    let local = tempfile::tempdir().unwrap();
    let local_state = local.path().join("state");
    for state in [format!("s3://{BUCKET}/team"), local_state.display().to_string()] {
        let apply = ["apply", "-f", s(&spec), "--phase", "network", "--state", &state, "-q"];
        // The network exists after the first apply, so the racing rounds are quick no-change runs. The winner's
        // first AWS call (made only once it holds the lock) is held at the proxy's gate until the other run has
        // ended, so a slow start of one process on a busy machine cannot let the two runs take turns.
        env.ok(&apply);
        for round in 0..20 {
            env.proxy.gate_action("DescribeVpcs");
            let body = stale_lock(round);
            if state.starts_with("s3://") {
                rt().block_on(async {
                    env.s3()
                        .put_object()
                        .bucket(BUCKET)
                        .key("team/clusters/eks-minimal/lock")
                        .body(body.into())
                        .send()
                        .await
                        .unwrap()
                });
            } else {
                std::fs::write(local_state.join("clusters/eks-minimal/lock"), body).unwrap();
            }
            let racers: Vec<std::process::Child> = (0..2)
                .map(|_| {
                    env.kforge()
                        .args(apply)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let mut racers = racers;
            // One run ends (the loser, refused at the lock) while the other waits at the gate; two at the gate
            // would be two runs holding the lock.
            let started = std::time::Instant::now();
            while !racers.iter_mut().any(|c| c.try_wait().unwrap().is_some()) && env.proxy.gated() < 2 {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "round {round}: neither run ended"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            env.proxy.remove_gate();
            let mut outcomes: Vec<(i32, String)> = racers
                .into_iter()
                .map(|c| {
                    let o = c.wait_with_output().unwrap();
                    (
                        o.status.code().unwrap_or(-1),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .collect();
            outcomes.sort();
            assert_eq!(
                (outcomes[0].0, outcomes[1].0),
                (0, 3),
                "{state} round {round}: exactly one proceeds:\n{outcomes:#?}"
            );
            assert!(
                outcomes[1].1.contains("is locked by `kforge apply`"),
                "{}",
                outcomes[1].1
            );
        }
        let lock_left = if state.starts_with("s3://") {
            lock_exists(&env)
        } else {
            local_state.join("clusters/eks-minimal/lock").exists()
        };
        assert!(!lock_left, "{state}: released");
        env.ok(&["delete", "cluster", "eks-minimal", "--yes", "--state", &state]);
    }
}

/// SIGTERM (what CI runners send when a job is cancelled) is handled like Ctrl-C: the lock is released and kforge
/// exits 130.
#[test]
fn sigterm_releases_the_lock_and_exits_130() {
    let env = TestEnv::new();
    bucket(&env);
    let state = format!("s3://{BUCKET}/team");
    let spec = example("eks-minimal.yaml");
    let mut run = env.spawn_until_held(
        2,
        &["apply", "-f", s(&spec), "--phase", "network", "--state", &state, "-q"],
    );
    assert!(lock_exists(&env));
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < until, "kforge did not exit on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(!lock_exists(&env), "the lock was released");
    env.proxy.reset();
    env.ok(&["delete", "cluster", "eks-minimal", "--yes", "--state", &state]);
}
