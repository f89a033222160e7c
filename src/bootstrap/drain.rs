//! Drain, done as `kubectl drain` does it, through kube-rs: refuse first what cannot be moved without losing data
//! (pods with emptyDir storage, pods no controller recreates) unless told to, then cordon the Node and evict its
//! pods through the Eviction API (policy/v1), so PodDisruptionBudgets are honoured: a 429 means a budget allows
//! no disruption now, and the eviction is retried, with the budget named in the progress line, until
//! `timeout`. DaemonSet pods and mirror pods stay (their controller or kubelet would put them back). A drain that
//! cannot finish names the pods and the budgets that hold it. Every command that takes a node away uses this.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};

use crate::engine::Step;
use crate::engine::wait::Wait;

/// How a drain treats what it cannot move safely, and how long it may take.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Evict pods whose emptyDir data is lost with them (`--delete-emptydir-data`).
    pub delete_emptydir_data: bool,
    /// Evict pods that no controller recreates (`--force-drain`, kubectl drain's `--force`).
    pub force: bool,
    /// How long the evictions may take, budgets included (`--drain-timeout`).
    pub timeout: Duration,
}

/// What a drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Left where it is, and why.
    Skip(&'static str),
    Evict,
    /// Not drained without a flag, and why.
    Refuse(String),
}

/// The pod's `namespace/name`.
pub fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// What a drain does with `pod` under `opts` (kubectl drain's filters, in its order).
pub fn disposition(pod: &Pod, opts: &DrainOptions) -> Disposition {
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")) {
        return Disposition::Skip("mirror pod of a static manifest");
    }
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    let controller = pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|c| c.kind == "DaemonSet") {
        return Disposition::Skip("DaemonSet pod");
    }
    if finished {
        // Nothing runs any more: nothing is lost by evicting it, and budgets do not count it.
        return Disposition::Evict;
    }
    if controller.is_none() && !opts.force {
        return Disposition::Refuse("no controller would recreate it (--force-drain deletes it anyway)".into());
    }
    let empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
    if empty_dir && !opts.delete_emptydir_data {
        return Disposition::Refuse(
            "it keeps data in an emptyDir volume that is lost when it moves (use --delete-emptydir-data)".into(),
        );
    }
    Disposition::Evict
}

/// Whether `selector` selects `labels` (matchLabels and every matchExpressions operator). An empty selector
/// selects everything, as for PodDisruptionBudgets in policy/v1.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("node {node} cannot be drained: {}\n  hint: {hint}", .pods.join("; "))]
    Refused {
        node: String,
        pods: Vec<String>,
        hint: String,
    },
    #[error(
        "node {node} was not drained in {secs}s: {}\n  hint: the node stays cordoned; let the budgets allow a \
         disruption (more replicas, or a lower minAvailable), or give the drain longer with --drain-timeout",
        .blocking.join("; ")
    )]
    TimedOut {
        node: String,
        secs: u64,
        blocking: Vec<String>,
    },
    /// The API has no such Node (never registered, or already deleted): nothing to drain.
    #[error("node {node} is not registered with the API")]
    NoNode { node: String },
    #[error("node {node}: {action}: {message}\n  hint: check that the API server answers (`kforge validate cluster`)")]
    Api {
        node: String,
        action: String,
        message: String,
    },
}

fn api_error(node: &str, action: &str) -> impl Fn(kube::Error) -> DrainError {
    let (node, action) = (node.to_string(), action.to_string());
    move |e| DrainError::Api {
        node: node.clone(),
        action: action.clone(),
        message: e.to_string(),
    }
}

/// Marks `node` unschedulable (`true`) or schedulable again.
pub async fn cordon(client: &kube::Client, node: &str, unschedulable: bool) -> Result<(), DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let action = if unschedulable { "cordon" } else { "uncordon" };
    match nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Err(DrainError::NoNode { node: node.into() }),
        Err(e) => Err(api_error(node, action)(e)),
    }
}

/// What a finished drain did.
#[derive(Debug, Default, Clone)]
pub struct Drained {
    pub evicted: Vec<String>,
    pub skipped: Vec<String>,
}

/// The budgets in `namespace` that select `pod` (named when an eviction is refused with 429).
async fn budgets_of(client: &kube::Client, pod: &Pod) -> Vec<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    match pdbs.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|s| selects(s, &labels))
            })
            .map(|b| format!("{namespace}/{}", b.metadata.name.as_deref().unwrap_or("?")))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One pod the drain moves, and where its eviction stands.
struct Pending {
    pod: Pod,
    /// The eviction was accepted: waiting for the pod (this uid) to be gone.
    accepted: bool,
    /// Why the last eviction was refused (the budgets that hold it).
    blocked_by: Option<String>,
}

/// Cordons `node`, then evicts its pods (see the module comment) until none is left or `opts.timeout` passes.
/// `progress` gets a line when a pod starts or stops waiting for a budget. The node stays cordoned: the caller
/// uncordons it once it is back in service.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    opts: &DrainOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Drained, DrainError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let listed = pods.list(&on_node).await.map_err(api_error(node, "list pods"))?;
    let mut drained = Drained::default();
    let mut refused = Vec::new();
    let mut pending = Vec::new();
    for pod in listed.items {
        match disposition(&pod, opts) {
            Disposition::Skip(why) => drained.skipped.push(format!("{} ({why})", pod_name(&pod))),
            Disposition::Refuse(why) => refused.push(format!("pod {}: {why}", pod_name(&pod))),
            Disposition::Evict => pending.push(Pending {
                pod,
                accepted: false,
                blocked_by: None,
            }),
        }
    }
    if !refused.is_empty() {
        return Err(DrainError::Refused {
            node: node.into(),
            pods: refused,
            hint: "nothing was changed (the node is not cordoned); move or delete those pods yourself, or re-run \
                   with the flag named"
                .into(),
        });
    }
    cordon(client, node, true).await?;
    // Where the drain stands between two rounds (taken out of the lock while a round runs).
    let state = std::sync::Mutex::new((pending, drained));
    let rounds = Wait::new(format!("drain {node}"), opts.timeout)
        .until(|| async {
            let (pending, mut drained) = std::mem::take(&mut *state.lock().expect("never poisoned"));
            let mut left = Vec::new();
            for mut p in pending {
                let name = p.pod.metadata.name.clone().unwrap_or_default();
                let namespace = p.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                if p.accepted {
                    // Gone when the API has no such pod, or a new one of the same name (a StatefulSet's).
                    match api.get_opt(&name).await.map_err(api_error(node, "read pod"))? {
                        Some(now) if now.metadata.uid == p.pod.metadata.uid => left.push(p),
                        _ => drained.evicted.push(pod_name(&p.pod)),
                    }
                    continue;
                }
                match api.evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        if p.blocked_by.take().is_some() {
                            progress(format!("drain {node}: pod {} evicted", pod_name(&p.pod)));
                        }
                        p.accepted = true;
                        left.push(p);
                    }
                    Err(kube::Error::Api(s)) if s.is_not_found() => drained.evicted.push(pod_name(&p.pod)),
                    // 429: a budget allows no disruption now; 500 with several budgets selecting the pod is no better.
                    Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => {
                        let budgets = budgets_of(client, &p.pod).await;
                        let why = if budgets.is_empty() {
                            format!("eviction refused ({}): {}", s.code, s.message)
                        } else {
                            format!("PodDisruptionBudget {} allows no disruption", budgets.join(", "))
                        };
                        if p.blocked_by.as_deref() != Some(why.as_str()) {
                            progress(format!("drain {node}: pod {} waits: {why}", pod_name(&p.pod)));
                        }
                        p.blocked_by = Some(why);
                        left.push(p);
                    }
                    Err(e) => return Err(api_error(node, &format!("evict pod {}", pod_name(&p.pod)))(e).into()),
                }
            }
            let waiting = left.len();
            *state.lock().expect("never poisoned") = (left, drained);
            Ok(if waiting == 0 {
                Step::Done(())
            } else {
                Step::Blocked {
                    reason: format!("{waiting} pods left"),
                }
            })
        })
        .await;
    let (pending, drained) = state.into_inner().expect("never poisoned");
    match rounds {
        Ok(()) => Ok(drained),
        Err(e) => match e.downcast::<DrainError>() {
            Ok(failed) => Err(failed),
            Err(_) => Err(DrainError::TimedOut {
                node: node.into(),
                secs: opts.timeout.as_secs(),
                blocking: pending
                    .iter()
                    .map(|p| match &p.blocked_by {
                        Some(why) => format!("pod {}: {why}", pod_name(&p.pod)),
                        None => format!("pod {}: evicted but still terminating", pod_name(&p.pod)),
                    })
                    .collect(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn opts() -> DrainOptions {
        DrainOptions {
            delete_emptydir_data: false,
            force: false,
            timeout: Duration::from_secs(60),
        }
    }

    fn owned_by(kind: &str) -> serde_json::Value {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}])
    }

    #[test]
    fn drain_moves_what_a_controller_recreates_and_leaves_daemonsets_and_mirror_pods() {
        let rs = pod(
            json!({"metadata": {"name": "web-1", "namespace": "default", "ownerReferences": owned_by("ReplicaSet")}}),
        );
        assert_eq!(disposition(&rs, &opts()), Disposition::Evict);
        let ds = pod(json!({"metadata": {"name": "proxy", "ownerReferences": owned_by("DaemonSet")}}));
        assert_eq!(disposition(&ds, &opts()), Disposition::Skip("DaemonSet pod"));
        let mirror = pod(json!({"metadata": {"name": "etcd", "annotations": {"kubernetes.io/config.mirror": "abc"}}}));
        assert!(matches!(disposition(&mirror, &opts()), Disposition::Skip(_)));
        let done = pod(json!({"metadata": {"name": "job"}, "status": {"phase": "Succeeded"}}));
        assert_eq!(disposition(&done, &opts()), Disposition::Evict);
    }

    #[test]
    fn bare_pods_and_emptydir_data_need_their_flags() {
        let bare = pod(json!({"metadata": {"name": "debug"}}));
        assert!(matches!(disposition(&bare, &opts()), Disposition::Refuse(w) if w.contains("--force")));
        let forced = DrainOptions { force: true, ..opts() };
        assert_eq!(disposition(&bare, &forced), Disposition::Evict);
        let cache = pod(json!({
            "metadata": {"name": "cache", "ownerReferences": owned_by("ReplicaSet")},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "scratch", "emptyDir": {}}]}
        }));
        assert!(matches!(disposition(&cache, &opts()), Disposition::Refuse(w) if w.contains("--delete-emptydir-data")));
        let allowed = DrainOptions {
            delete_emptydir_data: true,
            ..opts()
        };
        assert_eq!(disposition(&cache, &allowed), Disposition::Evict);
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "web".to_string()), ("tier".into(), "front".into())].into();
        let s = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(selects(&s(json!({"matchLabels": {"app": "web"}})), &labels));
        assert!(!selects(&s(json!({"matchLabels": {"app": "db"}})), &labels));
        assert!(selects(&s(json!({})), &labels));
        assert!(selects(
            &s(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]})),
            &labels
        ));
        assert!(!selects(
            &s(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]})),
            &labels
        ));
        assert!(selects(
            &s(json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})),
            &labels
        ));
        assert!(!selects(
            &s(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "zone", "operator": "Exists"}]})),
            &labels
        ));
    }
}
