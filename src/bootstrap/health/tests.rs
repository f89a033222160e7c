//! Unit tests of the health checks' judgements over API objects and command output.

use super::*;
use serde_json::json;

#[test]
fn unit_states_are_read_per_unit() {
    let text = "Id=kforge-kubelet.service\nActiveState=activating\nSubState=auto-restart\nNRestarts=4\n\n\
                Id=kforge-kube-proxy.service\nActiveState=active\nSubState=running\nNRestarts=0\n";
    let s = parse_unit_states(text);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].unit, "kforge-kubelet");
    assert!(!s[0].is_active());
    assert_eq!(s[0].restarts, 4);
    assert!(s[1].is_active());
}

#[test]
fn a_pod_is_healthy_only_when_running_with_every_container_ready() {
    let running = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": true}]}});
    assert_eq!(pod_problem(&running), None);
    let done = json!({"status": {"phase": "Succeeded"}});
    assert_eq!(pod_problem(&done), None);
    let pulling = json!({"status": {"phase": "Pending", "containerStatuses": [
        {"name": "coredns", "ready": false, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
    ]}});
    let p = pod_problem(&pulling).unwrap();
    assert!(
        p.starts_with("Pending; container coredns waiting: ImagePullBackOff"),
        "{p}"
    );
    let unready = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": false, "state": {"running": {}}}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}});
    assert!(pod_problem(&unready).unwrap().contains("Ready is False"));
    let unscheduled = json!({"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"}]}});
    assert!(pod_problem(&unscheduled).unwrap().contains("Unschedulable"));
}

#[test]
fn a_node_is_ready_only_with_ready_true() {
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    assert!(node_ready(&ready).0);
    let not = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
        "message": "container runtime network not ready"}]}});
    let (ok, why) = node_ready(&not);
    assert!(!ok && why.contains("network not ready"), "{why}");
    assert!(!node_ready(&json!({})).0);
}

#[test]
fn a_node_under_memory_disk_or_pid_pressure_is_named() {
    let with = |conditions: serde_json::Value| json!({"status": {"conditions": conditions}});
    let calm = with(
        json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"},
        {"type": "MemoryPressure", "status": "False"}, {"type": "PIDPressure", "status": "False"}]),
    );
    assert_eq!(node_pressure(&calm), None);
    assert_eq!(node_pressure(&json!({})), None);
    let disk = with(
        json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "True",
        "reason": "KubeletHasDiskPressure", "message": "kubelet has disk pressure"},
        {"type": "PIDPressure", "status": "True", "reason": "KubeletHasInsufficientPID"}]),
    );
    assert_eq!(
        node_pressure(&disk).as_deref(),
        Some("DiskPressure: KubeletHasDiskPressure kubelet has disk pressure; PIDPressure: KubeletHasInsufficientPID")
    );
}

#[test]
fn a_kubelet_reports_unless_its_ready_condition_is_unknown() {
    let with = |status: &str| json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
    assert!(kubelet_reporting(&with("True")));
    assert!(kubelet_reporting(&with("False")));
    assert!(!kubelet_reporting(&with("Unknown")));
    assert!(!kubelet_reporting(&json!({"status": {}})));
}

#[test]
fn a_master_node_needs_the_control_plane_label_and_taint() {
    let taint = json!([{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}]);
    let good = json!({"metadata": {"labels": {CONTROL_PLANE_ROLE: ""}}, "spec": {"taints": taint}});
    assert_eq!(control_plane_problem(&good), None);
    let unlabelled = json!({"metadata": {"labels": {}}, "spec": {"taints": taint}});
    assert!(control_plane_problem(&unlabelled).unwrap().contains("the label"));
    let untainted = json!({"metadata": {"labels": {CONTROL_PLANE_ROLE: ""}}, "spec": {}});
    assert!(control_plane_problem(&untainted).unwrap().contains("ordinary pods"));
    let prefer = json!({"metadata": {"labels": {CONTROL_PLANE_ROLE: ""}},
                        "spec": {"taints": [{"key": CONTROL_PLANE_ROLE, "effect": "PreferNoSchedule"}]}});
    assert!(control_plane_problem(&prefer).is_some());
}

#[test]
fn every_role_has_its_units_and_probes() {
    assert!(units_of(HostRole::Worker).contains(&KUBELET));
    assert!(units_of(HostRole::Master).contains(&"kforge-kube-apiserver"));
    // The masters are Nodes too.
    assert!(units_of(HostRole::Master).contains(&KUBELET) && units_of(HostRole::Master).contains(&KUBE_PROXY));
    let master: Vec<&str> = probes(HostRole::Master).iter().map(|p| p.check).collect();
    assert_eq!(
        master,
        [
            "etcd health",
            "apiserver readyz",
            "controller-manager healthz",
            "scheduler healthz",
            "kubelet healthz",
            "kube-proxy healthz"
        ]
    );
    let ok = Output {
        status: 0,
        stdout: "ok\n".into(),
        stderr: String::new(),
    };
    assert!(says_ok(&ok, 0));
    let refused = Output {
        status: 7,
        stdout: String::new(),
        stderr: "curl: (7) Failed to connect".into(),
    };
    assert!(!says_ok(&refused, 0));
    assert!(seconds_since("2020-01-01T00:00:00.000000Z").unwrap() > 1e8);
}
