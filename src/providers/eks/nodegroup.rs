//! EKS managed nodegroups: sizes, labels, taints, launch template, converged update by update.

use super::*;

pub struct ManagedNodegroup {
    pub id: String,
    pub cluster: String,
    /// Nodes start at the cluster's version; `upgrade cluster` moves them later.
    pub kubernetes_version: String,
    pub group: NodeGroup,
    pub subnets: Vec<String>,
    /// Logical id of the group's launch template.
    pub launch_template: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

/// The AMI type EKS picks nodes from: AL2023, with NVIDIA drivers for GPU groups, ARM for Graviton types.
pub fn ami_type(group: &NodeGroup) -> AmiTypes {
    let graviton = group.instance_types.iter().all(|t| {
        let family = t.split('.').next().unwrap_or("");
        // m6g, c7gn, r8g...: a 'g' right after the generation digit.
        family
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .is_some_and(|(i, _)| family[i + 1..].starts_with('g'))
            && !family.starts_with('g')
    });
    match (group.gpu, graviton) {
        (true, true) => AmiTypes::Al2023Arm64Nvidia,
        (true, false) => AmiTypes::Al2023X8664Nvidia,
        (false, true) => AmiTypes::Al2023Arm64Standard,
        (false, false) => AmiTypes::Al2023X8664Standard,
    }
}

pub(super) fn taint_effect(e: TaintEffect) -> EksTaintEffect {
    match e {
        TaintEffect::NoSchedule => EksTaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule => EksTaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute => EksTaintEffect::NoExecute,
    }
}

pub(super) fn render_taint(key: &str, value: Option<&str>, effect: &str) -> String {
    format!("{key}={}:{effect}", value.unwrap_or(""))
}

impl ManagedNodegroup {
    pub(super) fn scaling(&self) -> String {
        let g = &self.group;
        format!("min={} desired={} max={}", g.min_size, g.desired_size, g.max_size)
    }

    pub(super) fn capacity(&self) -> CapacityTypes {
        if self.group.spot {
            CapacityTypes::Spot
        } else {
            CapacityTypes::OnDemand
        }
    }

    pub(super) fn taints(&self) -> Vec<EksTaint> {
        self.group
            .taints
            .iter()
            .map(|t| {
                EksTaint::builder()
                    .key(&t.key)
                    .set_value(t.value.clone())
                    .effect(taint_effect(t.effect))
                    .build()
            })
            .collect()
    }

    pub(super) fn observe(&self, n: &aws_sdk_eks::types::Nodegroup) -> Observed {
        let s = n.scaling_config();
        let lt = n.launch_template();
        let attrs = BTreeMap::from([
            (
                "scaling",
                format!(
                    "min={} desired={} max={}",
                    s.and_then(|s| s.min_size()).unwrap_or(0),
                    s.and_then(|s| s.desired_size()).unwrap_or(0),
                    s.and_then(|s| s.max_size()).unwrap_or(0)
                ),
            ),
            ("labels", render(&sorted_map(n.labels()))),
            (
                "taints",
                join(n.taints().iter().map(|t| {
                    render_taint(
                        t.key().unwrap_or_default(),
                        t.value(),
                        t.effect().map(|e| e.as_str()).unwrap_or(""),
                    )
                })),
            ),
            ("instanceTypes", n.instance_types().join(",")),
            (
                "capacityType",
                n.capacity_type().map(|c| c.as_str()).unwrap_or("ON_DEMAND").to_string(),
            ),
            (
                "amiType",
                n.ami_type().map(|a| a.as_str()).unwrap_or_default().to_string(),
            ),
            ("subnets", join(n.subnets())),
            ("nodeRole", n.node_role().unwrap_or_default().to_string()),
            (
                "launchTemplate",
                lt.and_then(|l| l.id()).unwrap_or_default().to_string(),
            ),
            (
                "launchTemplateVersion",
                lt.and_then(|l| l.version()).unwrap_or_default().to_string(),
            ),
            ("tags", render_subset(&sorted_map(n.tags()), &self.tags)),
            (
                "status",
                n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
            ),
        ]);
        Observed {
            id: n.nodegroup_name().unwrap_or(&self.group.name).to_string(),
            attrs,
            outputs: Outputs::from([
                ("id".to_string(), self.group.name.clone()),
                ("arn".to_string(), n.nodegroup_arn().unwrap_or_default().to_string()),
            ]),
        }
    }

    pub(super) async fn describe(&self, ctx: &Ctx) -> anyhow::Result<Option<aws_sdk_eks::types::Nodegroup>> {
        describe_nodegroup(&ctx.aws, &self.cluster, &self.group.name, &self.id).await
    }

    pub(super) fn failed(&self, n: &aws_sdk_eks::types::Nodegroup) -> anyhow::Error {
        let list = n.health().map(|h| h.issues()).unwrap_or_default();
        anyhow::anyhow!(
            "{} (nodegroup {} of {}) is {}:\n    {}\n  hint: fix the cause above; a re-run replaces a failed nodegroup only after `kforge delete cluster` or removing the group from the spec",
            self.id,
            self.group.name,
            self.cluster,
            n.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
            issues(
                list.iter()
                    .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
            )
        )
    }

    pub(super) async fn create(&self, ctx: &Ctx, desired: &Desired) -> anyhow::Result<Step<Outputs>> {
        let g = &self.group;
        let r = ctx
            .aws
            .eks()
            .create_nodegroup()
            .client_request_token(ctx.client_token(&self.id, desired))
            .cluster_name(&self.cluster)
            .nodegroup_name(&g.name)
            .version(&self.kubernetes_version)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(crate::model::aws_i32(g.min_size))
                    .max_size(crate::model::aws_i32(g.max_size))
                    .desired_size(crate::model::aws_i32(g.desired_size))
                    .build(),
            )
            .set_instance_types(Some(g.instance_types.clone()))
            .capacity_type(self.capacity())
            .ami_type(ami_type(g))
            .set_subnets(Some(desired.value("subnets")?.split(',').map(str::to_string).collect()))
            .node_role(desired.value("nodeRole")?)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .id(desired.value("launchTemplate")?)
                    .version(desired.value("launchTemplateVersion")?)
                    .build(),
            )
            .set_labels(Some(g.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .set_taints(Some(self.taints()))
            .update_config(NodegroupUpdateConfig::builder().max_unavailable(1).build())
            .set_tags(Some(eks_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err(&self.id, "CreateNodegroup")(e)));
        match r {
            Ok(out) => match out.nodegroup {
                Some(n) if n.status() == Some(&NodegroupStatus::Active) => Ok(Step::Done(self.observe(&n).outputs)),
                _ => Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: "CREATING (nodes are starting and joining)".into(),
                }),
            },
            Err(e) if is(&e, ErrorClass::NotYetVisible) => Ok(Step::Retry {
                after: Duration::from_secs(10),
                reason: "waiting for the node role to propagate in IAM".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Resource for ManagedNodegroup {
    resource_metadata!("eks-nodegroup", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        let g = &self.group;
        Desired::default()
            .attr("scaling", self.scaling(), Mutability::InPlace)
            .attr("labels", render(&g.labels), Mutability::InPlace)
            .attr(
                "taints",
                join(
                    g.taints
                        .iter()
                        .map(|t| render_taint(&t.key, t.value.as_deref(), taint_effect(t.effect).as_str())),
                ),
                Mutability::InPlace,
            )
            .attr("instanceTypes", g.instance_types.join(","), Mutability::Replace)
            .attr("capacityType", self.capacity().as_str(), Mutability::Replace)
            .attr("amiType", ami_type(g).as_str(), Mutability::Replace)
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Replace)
            .attr("nodeRole", inputs.get("role/node", "arn"), Mutability::Replace)
            .attr(
                "launchTemplate",
                inputs.get(&self.launch_template, "id"),
                Mutability::Replace,
            )
            // A new template version rolls the nodes onto it.
            .attr(
                "launchTemplateVersion",
                inputs.get(&self.launch_template, "version"),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.nodegroups(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|n| n.nodegroup_name() == Some(self.group.name.as_str()))
            .filter(|n| n.status() != Some(&NodegroupStatus::Deleting))
            .map(|n| self.observe(n)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let Some(now) = self.describe(ctx).await? else {
            return self.create(ctx, desired).await;
        };
        match now.status() {
            Some(NodegroupStatus::Active) => {}
            Some(NodegroupStatus::CreateFailed | NodegroupStatus::Degraded | NodegroupStatus::DeleteFailed) => {
                return Err(self.failed(&now));
            }
            Some(NodegroupStatus::Deleting) => {
                return Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: "a nodegroup of this name is still being deleted".into(),
                });
            }
            s => {
                return Ok(Step::Retry {
                    after: NODEGROUP_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        let differs =
            |name: &str| observed.attrs.get(name).map(String::as_str) != desired.get(name).and_then(Value::known);
        let eks = ctx.aws.eks();
        if differs("tags") {
            eks.tag_resource()
                .resource_arn(now.nodegroup_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        let result = if differs("scaling") || differs("labels") || differs("taints") {
            let g = &self.group;
            let mut call = eks
                .update_nodegroup_config()
                .cluster_name(&self.cluster)
                .nodegroup_name(&g.name);
            if differs("scaling") {
                call = call.scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(crate::model::aws_i32(g.min_size))
                        .max_size(crate::model::aws_i32(g.max_size))
                        .desired_size(crate::model::aws_i32(g.desired_size))
                        .build(),
                );
            }
            if differs("labels") {
                let current = sorted_map(now.labels());
                let remove: Vec<String> = current.keys().filter(|k| !g.labels.contains_key(*k)).cloned().collect();
                call = call.labels(
                    UpdateLabelsPayload::builder()
                        .set_add_or_update_labels(
                            (!g.labels.is_empty())
                                .then(|| g.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                        )
                        .set_remove_labels((!remove.is_empty()).then_some(remove))
                        .build(),
                );
            }
            if differs("taints") {
                let wanted = self.taints();
                let remove: Vec<EksTaint> = now
                    .taints()
                    .iter()
                    .filter(|t| !wanted.iter().any(|w| w.key() == t.key() && w.effect() == t.effect()))
                    .cloned()
                    .collect();
                call = call.taints(
                    UpdateTaintsPayload::builder()
                        .set_add_or_update_taints((!wanted.is_empty()).then_some(wanted))
                        .set_remove_taints((!remove.is_empty()).then_some(remove))
                        .build(),
                );
            }
            Some((
                "configuration",
                call.send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&self.id, "UpdateNodegroupConfig")(e))),
            ))
        } else if differs("launchTemplateVersion") {
            Some((
                "launch template version (rolling the nodes)",
                eks.update_nodegroup_version()
                    .cluster_name(&self.cluster)
                    .nodegroup_name(&self.group.name)
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .id(desired.value("launchTemplate")?)
                            .version(desired.value("launchTemplateVersion")?)
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&self.id, "UpdateNodegroupVersion")(e))),
            ))
        } else {
            None
        };
        match result {
            None => Ok(Step::Done(observed.outputs)),
            Some((_, Err(e))) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: NODEGROUP_POLL,
                reason: "another update of the nodegroup is in progress".into(),
            }),
            Some((_, Err(e))) => Err(e),
            Some((what, Ok(()))) => Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating {what}"),
            }),
        }
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_nodegroup(ctx, &self.cluster, &self.group.name).await
    }
}

pub async fn delete_nodegroup(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-nodegroup ({name})");
    let Some(current) = describe_nodegroup(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(NodegroupStatus::Deleting) {
        return Ok(Step::Retry {
            after: NODEGROUP_POLL,
            reason: "DELETING (nodes are draining)".into(),
        });
    }
    match eks
        .delete_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteNodegroup")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
            after: NODEGROUP_POLL,
            reason: "an update of the nodegroup is in progress".into(),
        }),
        Err(e) => Err(e),
    }
}

/// What delete knows about EKS managed nodegroups (see `delete::Kind`).
#[derive(Debug)]
pub struct EksNodegroupKind;

#[async_trait]
impl Kind for EksNodegroupKind {
    fn name(&self) -> &'static str {
        "eks-nodegroup"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        hanging_off_cluster(ctx, kind, ctx.inventory.nodegroups(&ctx.aws), |n| {
            (n.nodegroup_name(), n.tags())
        })
        .await
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_nodegroup(ctx, &ctx.cluster, &item.cloud_id).await
    }
}
