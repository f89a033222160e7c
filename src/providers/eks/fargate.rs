//! EKS Fargate profiles (immutable: a change replaces the profile).

use super::*;

pub struct FargateProfileRes {
    pub id: String,
    pub cluster: String,
    pub profile: FargateProfile,
    pub subnets: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

pub(super) fn render_selectors<'a>(selectors: impl Iterator<Item = (&'a str, BTreeMap<String, String>)>) -> String {
    let mut v: Vec<String> = selectors
        .map(|(ns, labels)| {
            if labels.is_empty() {
                ns.to_string()
            } else {
                format!("{ns}{{{}}}", render(&labels))
            }
        })
        .collect();
    v.sort();
    v.join(";")
}

#[async_trait]
impl Resource for FargateProfileRes {
    resource_metadata!("eks-fargate-profile", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(20 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        // EKS cannot change a Fargate profile: every setting is a replacement.
        Desired::default()
            .attr(
                "selectors",
                render_selectors(
                    self.profile
                        .selectors
                        .iter()
                        .map(|s| (s.namespace.as_str(), s.labels.clone())),
                ),
                Mutability::Replace,
            )
            .attr(
                "podExecutionRole",
                inputs.get("role/fargate", "arn"),
                Mutability::Replace,
            )
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.fargate_profiles(&ctx.aws).await?;
        Ok(all
            .iter()
            .find(|p| p.fargate_profile_name() == Some(self.profile.name.as_str()))
            .filter(|p| p.status() != Some(&FargateProfileStatus::Deleting))
            .map(|p| self.observe(p)))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let eks = ctx.aws.eks();
        let now = describe_fargate_profile(&ctx.aws, &self.cluster, &self.profile.name, &self.id).await?;
        let Some(now) = now else {
            let selectors = self
                .profile
                .selectors
                .iter()
                .map(|s| {
                    FargateProfileSelector::builder()
                        .namespace(&s.namespace)
                        .set_labels(
                            (!s.labels.is_empty())
                                .then(|| s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                        )
                        .build()
                })
                .collect();
            let r = eks
                .create_fargate_profile()
                .client_request_token(ctx.client_token(&self.id, desired))
                .cluster_name(&self.cluster)
                .fargate_profile_name(&self.profile.name)
                .pod_execution_role_arn(desired.value("podExecutionRole")?)
                .set_subnets(Some(desired.value("subnets")?.split(',').map(str::to_string).collect()))
                .set_selectors(Some(selectors))
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(|e| anyhow::Error::from(aws_err(&self.id, "CreateFargateProfile")(e)));
            return match r {
                Ok(out) => match out.fargate_profile {
                    Some(p) if p.status() == Some(&FargateProfileStatus::Active) => {
                        Ok(Step::Done(self.observe(&p).outputs))
                    }
                    _ => Ok(Step::Retry {
                        after: SMALL_POLL,
                        reason: "CREATING".into(),
                    }),
                },
                // One profile at a time per cluster.
                Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason: "another Fargate profile of the cluster is being created or deleted".into(),
                }),
                Err(e) => Err(e),
            };
        };
        match now.status() {
            Some(FargateProfileStatus::Active) => {}
            Some(FargateProfileStatus::CreateFailed | FargateProfileStatus::DeleteFailed) => {
                let list = now.health().map(|h| h.issues()).unwrap_or_default();
                anyhow::bail!(
                    "{} (Fargate profile {}) is {}:\n    {}\n  hint: check the pod execution role and that the subnets are private",
                    self.id,
                    self.profile.name,
                    now.status().map(|s| s.as_str()).unwrap_or_default(),
                    issues(
                        list.iter()
                            .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
                    )
                );
            }
            s => {
                return Ok(Step::Retry {
                    after: SMALL_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        if observed.attrs.get("tags").map(String::as_str) != desired.get("tags").and_then(Value::known) {
            eks.tag_resource()
                .resource_arn(now.fargate_profile_arn().unwrap_or_default())
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&self.id, "TagResource"))?;
        }
        Ok(Step::Done(observed.outputs))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_fargate_profile(ctx, &self.cluster, &self.profile.name).await
    }
}

impl FargateProfileRes {
    pub(super) fn observe(&self, p: &aws_sdk_eks::types::FargateProfile) -> Observed {
        Observed {
            id: p.fargate_profile_name().unwrap_or_default().to_string(),
            attrs: BTreeMap::from([
                (
                    "selectors",
                    render_selectors(
                        p.selectors()
                            .iter()
                            .map(|s| (s.namespace().unwrap_or_default(), sorted_map(s.labels()))),
                    ),
                ),
                (
                    "podExecutionRole",
                    p.pod_execution_role_arn().unwrap_or_default().to_string(),
                ),
                ("subnets", join(p.subnets())),
                ("tags", render_subset(&sorted_map(p.tags()), &self.tags)),
                (
                    "status",
                    p.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                ),
            ]),
            outputs: Outputs::from([
                ("id".to_string(), self.profile.name.clone()),
                (
                    "arn".to_string(),
                    p.fargate_profile_arn().unwrap_or_default().to_string(),
                ),
            ]),
        }
    }
}

pub async fn delete_fargate_profile(ctx: &Ctx, cluster: &str, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-fargate-profile ({name})");
    let Some(current) = describe_fargate_profile(&ctx.aws, cluster, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    let status = current.status().cloned();
    if status == Some(FargateProfileStatus::Deleting) {
        return Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_fargate_profile()
        .cluster_name(cluster)
        .fargate_profile_name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteFargateProfile")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        // EKS deletes one Fargate profile at a time per cluster.
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
            after: SMALL_POLL,
            reason: "another Fargate profile is being deleted".into(),
        }),
        Err(e) => Err(e),
    }
}

/// What delete knows about EKS Fargate profiles (see `delete::Kind`).
#[derive(Debug)]
pub struct EksFargateProfileKind;

#[async_trait]
impl Kind for EksFargateProfileKind {
    fn name(&self) -> &'static str {
        "eks-fargate-profile"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        hanging_off_cluster(ctx, kind, ctx.inventory.fargate_profiles(&ctx.aws), |p| {
            (p.fargate_profile_name(), p.tags())
        })
        .await
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_fargate_profile(ctx, &ctx.cluster, &item.cloud_id).await
    }
}
