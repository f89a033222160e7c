//! What the node stage checks and sets beyond files: the instance identity over IMDSv2 (provider ec2), the
//! control-plane role of a master's Node through the API, and the addons.

use super::*;

/// The Node `host` registers as (the provider ID of an ec2 instance from what EC2 says of it; the node stage has
/// checked it against the instance's own metadata).
pub(super) fn node_identity(host: &BootstrapHost) -> units::NodeIdentity<'_> {
    units::NodeIdentity {
        name: &host.name,
        address: &host.address,
        labels: &host.labels,
        taints: &host.taints,
        master: host.role == HostRole::Master,
        provider_id: host
            .zone
            .as_deref()
            .zip(host.instance_id.as_deref())
            .map(|(zone, id)| units::aws_provider_id(zone, id)),
    }
}

/// The instance metadata (IMDSv2: a session token first; kforge's instances refuse v1) asked for the instance ID
/// and zone of the host behind `h`'s connection.
pub(super) const IMDS_IDENTITY: &str = "t=$(curl -sS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
     http://169.254.169.254/latest/api/token) && \
     z=$(curl -sS --max-time 5 -H \"X-aws-ec2-metadata-token: $t\" \
     http://169.254.169.254/latest/meta-data/placement/availability-zone) && \
     i=$(curl -sS --max-time 5 -H \"X-aws-ec2-metadata-token: $t\" http://169.254.169.254/latest/meta-data/instance-id) && \
     echo \"$z $i\"";

/// Checks that the instance the host's metadata names is the one kforge found in EC2 for it (so the provider ID
/// the kubelet registers with is the machine's own), and fills it in when EC2 did not say.
pub(super) fn verify_provider_id(h: &mut HostWork) -> Result<(), StepError> {
    let step = "node: instance metadata";
    let out = h.conn().run_ok(step, IMDS_IDENTITY)?;
    let (zone, id) = parse_imds_identity(&out.stdout).ok_or_else(|| StepError {
        host: h.host.name.clone(),
        step: step.into(),
        message: format!(
            "the instance metadata answered {:?}, not a zone and an instance ID",
            out.stdout.trim()
        ),
        hint: "the kubelet's provider ID comes from the instance metadata (IMDSv2): check that the instance's \
               metadata endpoint is enabled"
            .into(),
        transient: true,
    })?;
    match (&h.host.instance_id, &h.host.zone) {
        (Some(known), Some(known_zone)) if (known, known_zone) != (&id, &zone) => Err(StepError {
            host: h.host.name.clone(),
            step: step.into(),
            message: format!(
                "the host at {} is instance {id} in {zone} by its metadata, but EC2 lists {known} in {known_zone} \
                 at that address",
                h.host.address
            ),
            hint: "the address moved to another instance since kforge listed them: re-run".into(),
            transient: false,
        }),
        _ => {
            h.host.instance_id = Some(id);
            h.host.zone = Some(zone);
            Ok(())
        }
    }
}

/// `ZONE INSTANCE-ID` as [`IMDS_IDENTITY`] prints it.
pub(super) fn parse_imds_identity(text: &str) -> Option<(String, String)> {
    let (zone, id) = text.trim().split_once(' ')?;
    (id.starts_with("i-") && zone.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && !zone.contains(' '))
        .then(|| (zone.to_string(), id.to_string()))
}

/// The merge patch that gives a master's Node (as the API returned it) the control-plane role, `None` when it has
/// it. The labels alone merge into the Node's others, so that patch needs no precondition; a missing taint means
/// writing the whole taint list, so that patch carries the resourceVersion it was computed from and fails (409)
/// rather than overwrite a taint another client (the node lifecycle controller) changed since.
pub(super) fn control_plane_patch(node: &serde_json::Value) -> Option<serde_json::Value> {
    let labelled = health::has_label(node, health::CONTROL_PLANE_ROLE)
        && health::has_label(node, health::EXCLUDE_FROM_LOAD_BALANCERS);
    let tainted = health::has_control_plane_taint(node);
    let labels = serde_json::json!({health::CONTROL_PLANE_ROLE: "", health::EXCLUDE_FROM_LOAD_BALANCERS: ""});
    match (labelled, tainted) {
        (true, true) => None,
        (false, true) => Some(serde_json::json!({"metadata": {"labels": labels}})),
        (_, false) => {
            let mut taints: Vec<serde_json::Value> = node
                .pointer("/spec/taints")
                .and_then(|t| t.as_array())
                .cloned()
                .unwrap_or_default();
            taints.retain(|t| t["key"] != health::CONTROL_PLANE_ROLE);
            taints.push(serde_json::json!({"key": health::CONTROL_PLANE_ROLE, "effect": "NoSchedule"}));
            Some(serde_json::json!({
                "metadata": {
                    "resourceVersion": node.pointer("/metadata/resourceVersion"),
                    "labels": labels,
                },
                "spec": {"taints": taints},
            }))
        }
    }
}

/// Gives master `name`'s Node the control-plane role ([`control_plane_patch`]; a conflicting write is retried on
/// the Node read again); `Ok(true)` when the Node lacked something. The taint normally comes from the kubelet's
/// registration: this puts back one removed since.
pub(super) async fn ensure_control_plane_role(api: &ApiClient, name: &str) -> Result<bool, StepError> {
    let failed = |message: String| StepError {
        host: name.to_string(),
        step: "node: control-plane role".into(),
        message,
        hint: "check the API server's log; re-run to label the Node".into(),
        transient: true,
    };
    let path = format!("/api/v1/nodes/{name}");
    for _ in 0..5 {
        let (status, node) = api.get_json(&path).await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!("GET Node {name}: HTTP {status}")));
        }
        let Some(patch) = control_plane_patch(&node) else {
            return Ok(false);
        };
        let (status, body) = api
            .send(
                hyper::Method::PATCH,
                &path,
                Some("application/merge-patch+json"),
                bytes::Bytes::from(patch.to_string()),
            )
            .await
            .map_err(failed)?;
        if status.is_success() {
            return Ok(true);
        }
        if status != hyper::StatusCode::CONFLICT {
            return Err(failed(format!(
                "PATCH Node {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
    }
    Err(failed(format!(
        "the Node {name} kept changing under 5 attempts to patch it"
    )))
}

pub(super) async fn apply_addons(shared: &Shared) -> Result<Vec<addons::Applied>, StepError> {
    let api = &shared.facts.api_url;
    let images = shared.manifest.images_in(shared.assets.image_registry.as_deref());
    let objects = addons::objects(&shared.facts, &images, &shared.addons).map_err(|m| StepError {
        host: api.clone(),
        step: "addons: render".into(),
        message: m,
        hint: "kforge's addon templates are broken: report it with this message".into(),
        transient: false,
    })?;
    addons::apply(&shared.api, api, &objects, shared.opts.health_timeout).await
}
