//! EKS addons at the version the spec names or EKS's default for the cluster's release.

use super::*;

pub struct EksAddon {
    pub id: String,
    pub cluster: String,
    pub kubernetes_version: String,
    pub addon: Addon,
    /// The default version for the cluster's Kubernetes version, asked once (at find) when the spec names none.
    pub resolved_version: OnceCell<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

/// The version EKS marks as default for `addon` on `kubernetes_version` (else the newest compatible one).
pub async fn default_addon_version(ctx: &Ctx, addon: &str, kubernetes_version: &str) -> anyhow::Result<String> {
    let out = ctx
        .aws
        .eks()
        .describe_addon_versions()
        .addon_name(addon)
        .kubernetes_version(kubernetes_version)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(format!("addon/{addon}"), "DescribeAddonVersions")(e)));
    let out = match out {
        Err(e) if crate::aws::inventory::not_implemented(&e) => {
            anyhow::bail!(
                "addon/{addon}: the AWS endpoint has no EKS addon API (a local emulator such as moto)\n  hint: set `addons: []` in the spec to create the cluster without EKS addons there"
            )
        }
        other => other?,
    };
    let versions: Vec<_> = out.addons().iter().flat_map(|a| a.addon_versions()).collect();
    let compatible = |v: &aws_sdk_eks::types::AddonVersionInfo| {
        v.compatibilities()
            .iter()
            .any(|c| c.cluster_version() == Some(kubernetes_version))
    };
    let default = versions.iter().copied().filter(|v| compatible(v)).find(|v| {
        v.compatibilities()
            .iter()
            .any(|c| c.cluster_version() == Some(kubernetes_version) && c.default_version())
    });
    default
        .or_else(|| versions.iter().copied().find(|v| compatible(v)))
        .and_then(|v| v.addon_version())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "addon/{addon}: EKS offers no version of {addon} for Kubernetes {kubernetes_version}\n  hint: check the addon name, or remove it from spec.addons"
            )
        })
}

pub(super) fn addon_failed(id: &str, a: &aws_sdk_eks::types::Addon) -> anyhow::Error {
    let list = a.health().map(|h| h.issues()).unwrap_or_default();
    anyhow::anyhow!(
        "{id} is {}:\n    {}\n  hint: fix the cause above and re-run; `kubectl -n kube-system get pods` shows the addon's pods",
        a.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
        issues(
            list.iter()
                .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
        )
    )
}

impl EksAddon {
    pub(super) fn observe(&self, a: &aws_sdk_eks::types::Addon) -> Observed {
        Observed {
            id: a.addon_name().unwrap_or(&self.addon.name).to_string(),
            attrs: BTreeMap::from([
                ("version", a.addon_version().unwrap_or_default().to_string()),
                ("tags", render_subset(&sorted_map(a.tags()), &self.tags)),
                (
                    "status",
                    a.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                ),
            ]),
            outputs: Outputs::from([
                ("id".to_string(), self.addon.name.clone()),
                ("version".to_string(), a.addon_version().unwrap_or_default().to_string()),
            ]),
        }
    }
}

#[async_trait]
impl Resource for EksAddon {
    resource_metadata!("eks-addon", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(20 * 60)
    }
    fn desired(&self, _: &Inputs) -> Desired {
        let version = match (&self.addon.version, self.resolved_version.get()) {
            (Some(v), _) | (None, Some(v)) => Value::Known(v.clone()),
            (None, None) => Value::Unknown,
        };
        Desired::default()
            .attr("version", version, Mutability::InPlace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        if self.addon.version.is_none() {
            self.resolved_version
                .get_or_try_init(|| default_addon_version(ctx, &self.addon.name, &self.kubernetes_version))
                .await?;
        }
        let all = ctx.inventory.addons(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|a| a.addon_name() == Some(self.addon.name.as_str()))
            .map(|a| self.observe(a)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let eks = ctx.aws.eks();
        let version = desired.value("version")?;
        let now = describe_addon(&ctx.aws, &self.cluster, &self.addon.name, &self.id).await?;
        let Some(now) = now else {
            eks.create_addon()
                .client_request_token(ctx.client_token(&self.id, desired))
                .cluster_name(&self.cluster)
                .addon_name(&self.addon.name)
                .addon_version(version)
                // The cluster runs self-managed copies of the core addons from the start; EKS takes them over.
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "CreateAddon"))?;
            return Ok(Step::Retry {
                after: SMALL_POLL,
                reason: "CREATING".into(),
            });
        };
        use aws_sdk_eks::types::AddonStatus;
        match now.status() {
            Some(AddonStatus::Active) => {}
            Some(AddonStatus::CreateFailed | AddonStatus::UpdateFailed | AddonStatus::DeleteFailed) => {
                return Err(addon_failed(&self.id, &now));
            }
            s => {
                let mut reason = s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string();
                if let Some(i) = now.health().and_then(|h| h.issues().first()) {
                    reason.push_str(&format!(": {}", i.message().unwrap_or_default()));
                }
                return Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason,
                });
            }
        }
        let observed = self.observe(&now);
        if observed.attrs.get("tags").map(String::as_str) != desired.get("tags").and_then(Value::known) {
            eks.tag_resource()
                .resource_arn(now.addon_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        if now.addon_version() != Some(version) {
            eks.update_addon()
                .cluster_name(&self.cluster)
                .addon_name(&self.addon.name)
                .addon_version(version)
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .send()
                .await
                .map_err(aws_err(&self.id, "UpdateAddon"))?;
            return Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating to {version}"),
            });
        }
        Ok(Step::Done(observed.outputs))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_addon(ctx, &self.cluster, &self.addon.name).await
    }
}

pub async fn delete_addon(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-addon ({name})");
    let Some(current) = describe_addon(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(aws_sdk_eks::types::AddonStatus::Deleting) {
        return Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteAddon")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) => Err(e),
    }
}

/// What delete knows about EKS addons (see `delete::Kind`).
#[derive(Debug)]
pub struct EksAddonKind;

#[async_trait]
impl Kind for EksAddonKind {
    fn name(&self) -> &'static str {
        "eks-addon"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        hanging_off_cluster(ctx, kind, ctx.inventory.addons(&ctx.aws), |a| {
            (a.addon_name(), a.tags())
        })
        .await
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_addon(ctx, &ctx.cluster, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // What runs the addons' pods goes first.
        &[Order::Kind("eks-nodegroup"), Order::Kind("eks-fargate-profile")]
    }
}
