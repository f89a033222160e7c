use super::*;

#[test]
fn a_master_node_is_patched_only_for_what_it_lacks() {
    let cp = health::CONTROL_PLANE_ROLE;
    let taint = serde_json::json!({"key": cp, "effect": "NoSchedule"});
    let not_ready = serde_json::json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    // Just registered: tainted by the kubelet, not labelled. The labels alone, no precondition to fail on.
    let fresh = serde_json::json!({"metadata": {"resourceVersion": "7", "labels": {"kubernetes.io/os": "linux"}},
                                   "spec": {"taints": [taint, not_ready]}});
    let patch = control_plane_patch(&fresh).unwrap();
    assert_eq!(patch["metadata"]["labels"][cp], "");
    assert!(
        patch.get("spec").is_none() && patch["metadata"].get("resourceVersion").is_none(),
        "{patch}"
    );
    // Done: nothing to write.
    let done = serde_json::json!({"metadata": {"labels": {cp: "", health::EXCLUDE_FROM_LOAD_BALANCERS: ""}},
                                  "spec": {"taints": [taint]}});
    assert_eq!(control_plane_patch(&done), None);
    // The taint removed by hand: the whole list, the others kept, guarded by the resourceVersion.
    let untainted = serde_json::json!({"metadata": {"resourceVersion": "9", "labels": {cp: ""}},
                                       "spec": {"taints": [not_ready]}});
    let patch = control_plane_patch(&untainted).unwrap();
    assert_eq!(patch["metadata"]["resourceVersion"], "9");
    assert_eq!(patch["spec"]["taints"], serde_json::json!([not_ready, taint]));
}

#[test]
fn a_new_binary_restarts_the_units_that_run_it() {
    let units: Vec<String> = [
        "kforge-kube-apiserver",
        "kforge-kube-controller-manager",
        "kforge-kube-scheduler",
    ]
    .map(String::from)
    .to_vec();
    assert!(with_new_binaries(&[], &units, Vec::new()).is_empty());
    assert_eq!(
        with_new_binaries(&[], &units, vec!["kforge-kube-scheduler".into()]),
        ["kforge-kube-scheduler"]
    );
    assert_eq!(
        with_new_binaries(&["kubernetes-server".into()], &units, Vec::new()),
        units
    );
    // Another asset's binaries leave these units alone.
    assert!(with_new_binaries(&["kubernetes-node".into(), "cni-plugins".into()], &units, Vec::new()).is_empty());
    let node: Vec<String> = [health::KUBELET, health::KUBE_PROXY].map(String::from).to_vec();
    assert_eq!(with_new_binaries(&["kubernetes-node".into()], &node, Vec::new()), node);
    let containerd = vec!["kforge-containerd".to_string()];
    assert_eq!(with_new_binaries(&["runc".into()], &containerd, Vec::new()), containerd);
}

#[test]
fn the_provider_id_comes_from_what_imds_says() {
    assert_eq!(
        parse_imds_identity("us-east-1a i-0abc123\n"),
        Some(("us-east-1a".into(), "i-0abc123".into()))
    );
    assert_eq!(parse_imds_identity("<html>404</html>"), None);
    assert_eq!(parse_imds_identity(""), None);
    // The command asks IMDSv2 (token first) and sh parses it.
    assert!(IMDS_IDENTITY.contains("X-aws-ec2-metadata-token-ttl-seconds") && IMDS_IDENTITY.contains("-X PUT"));
    let out = std::process::Command::new("sh")
        .args(["-n", "-c", IMDS_IDENTITY])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn failure(host: &str, message: &str) -> StepError {
    StepError {
        host: host.into(),
        step: "api".into(),
        message: message.into(),
        hint: "check it".into(),
        transient: false,
    }
}

#[test]
fn a_failure_names_each_host_once() {
    // Seven hosts' checks of one endpoint fail alike: the endpoint is named once, not seven times.
    let same: Vec<StepError> = (0..7).map(|_| failure("https://10.0.0.5:6443", "not ready")).collect();
    let text = grouped(&same);
    assert_eq!(text.matches("https://10.0.0.5:6443").count(), 1, "{text}");
    // Different hosts failing alike are listed together; different causes on lines of their own.
    let mixed = [failure("m1", "down"), failure("m2", "down"), failure("w1", "full")];
    assert_eq!(
        grouped(&mixed),
        "  - m1, m2: api: down\n    hint: check it\n  - w1: api: full\n    hint: check it"
    );
}
