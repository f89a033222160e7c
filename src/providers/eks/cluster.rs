//! The EKS cluster: created with its settings, converged one EKS update at a time, its version moved only by
//! `upgrade cluster`.

use super::*;

pub struct EksCluster {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Logical ids of the subnets the control plane's ENIs may use.
    pub subnets: Vec<String>,
    pub eks: Eks,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

impl EksCluster {
    pub(super) fn cidrs(&self) -> String {
        if self.eks.endpoint_public {
            join(self.eks.public_access_cidrs.iter().map(|c| c.to_string()))
        } else {
            String::new()
        }
    }

    pub(super) fn observe(&self, c: &aws_sdk_eks::types::Cluster) -> Observed {
        let vpc = c.resources_vpc_config();
        let public = vpc.is_some_and(|v| v.endpoint_public_access());
        let enabled_logs: BTreeSet<&str> = c
            .logging()
            .map(|l| l.cluster_logging())
            .unwrap_or_default()
            .iter()
            .filter(|s| s.enabled() == Some(true))
            .flat_map(|s| s.types().iter().map(|t| t.as_str()))
            .collect();
        let logging: Vec<&str> = crate::model::EKS_LOG_TYPES
            .iter()
            .copied()
            .filter(|t| enabled_logs.contains(t))
            .collect();
        let key = c
            .encryption_config()
            .first()
            .and_then(|e| e.provider())
            .and_then(|p| p.key_arn())
            .unwrap_or_default();
        let attrs = BTreeMap::from([
            ("version", c.version().unwrap_or_default().to_string()),
            ("roleArn", c.role_arn().unwrap_or_default().to_string()),
            ("subnets", join(vpc.map(|v| v.subnet_ids()).unwrap_or_default())),
            ("endpointPublic", public.to_string()),
            (
                "endpointPrivate",
                vpc.is_some_and(|v| v.endpoint_private_access()).to_string(),
            ),
            (
                "publicAccessCidrs",
                if public {
                    join(vpc.map(|v| v.public_access_cidrs()).unwrap_or_default())
                } else {
                    String::new()
                },
            ),
            ("logging", logging.join(",")),
            ("secretsKey", key.to_string()),
            ("tags", render_subset(&sorted_map(c.tags()), &self.tags)),
            (
                "status",
                c.status().map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
            ),
        ]);
        let mut outputs = Outputs::from([
            ("id".to_string(), c.name().unwrap_or(&self.name).to_string()),
            ("arn".to_string(), c.arn().unwrap_or_default().to_string()),
            ("version".to_string(), c.version().unwrap_or_default().to_string()),
        ]);
        let optional = [
            ("endpoint", c.endpoint()),
            ("certificateAuthority", c.certificate_authority().and_then(|a| a.data())),
            (
                "oidcIssuer",
                c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()),
            ),
            ("clusterSecurityGroup", vpc.and_then(|v| v.cluster_security_group_id())),
            ("vpc", vpc.and_then(|v| v.vpc_id())),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                outputs.insert(k.into(), v.into());
            }
        }
        Observed {
            id: self.name.clone(),
            attrs,
            outputs,
        }
    }

    /// The cluster as EKS describes it now (not the run's snapshot).
    pub(super) async fn describe(&self, ctx: &Ctx) -> anyhow::Result<Option<aws_sdk_eks::types::Cluster>> {
        describe_cluster(&ctx.aws, &self.name, &format!("{} ({})", self.id, self.name)).await
    }

    pub(super) fn failed(&self, c: &aws_sdk_eks::types::Cluster) -> anyhow::Error {
        let health = c.health().map(|h| h.issues()).unwrap_or_default();
        anyhow::anyhow!(
            "{} ({}) is {}:\n    {}\n  hint: fix the cause above, then `kforge delete cluster {}` and create it again",
            self.id,
            self.name,
            c.status().map(|s| s.as_str()).unwrap_or("UNKNOWN"),
            issues(
                health
                    .iter()
                    .map(|i| (i.code().map(|c| c.as_str()), i.message(), i.resource_ids()))
            ),
            self.name
        )
    }

    pub(super) fn vpc_request(&self, subnets: Option<Vec<String>>) -> VpcConfigRequest {
        VpcConfigRequest::builder()
            .set_subnet_ids(subnets)
            .endpoint_public_access(self.eks.endpoint_public)
            .endpoint_private_access(self.eks.endpoint_private)
            .set_public_access_cidrs(
                self.eks
                    .endpoint_public
                    .then(|| self.eks.public_access_cidrs.iter().map(|c| c.to_string()).collect()),
            )
            .build()
    }

    pub(super) fn logging(&self, currently_enabled: &str) -> Logging {
        let wanted: Vec<LogType> = self.eks.logging.iter().map(|t| LogType::from(t.as_str())).collect();
        let disable: Vec<LogType> = currently_enabled
            .split(',')
            .filter(|t| !t.is_empty() && !self.eks.logging.iter().any(|w| w == t))
            .map(LogType::from)
            .collect();
        let mut setups = Vec::new();
        if !wanted.is_empty() {
            setups.push(LogSetup::builder().set_types(Some(wanted)).enabled(true).build());
        }
        if !disable.is_empty() {
            setups.push(LogSetup::builder().set_types(Some(disable)).enabled(false).build());
        }
        Logging::builder().set_cluster_logging(Some(setups)).build()
    }

    pub(super) async fn create(&self, ctx: &Ctx, desired: &Desired) -> anyhow::Result<Step<Outputs>> {
        let subnets: Vec<String> = desired.value("subnets")?.split(',').map(str::to_string).collect();
        let what = format!("{} ({})", self.id, self.name);
        let r = ctx
            .aws
            .eks()
            .create_cluster()
            .client_request_token(ctx.client_token(&self.id, desired))
            .name(&self.name)
            .version(&self.version)
            .role_arn(desired.value("roleArn")?)
            .resources_vpc_config(self.vpc_request(Some(subnets)))
            .logging(self.logging(""))
            .set_encryption_config(self.eks.secrets_encryption_key_arn.as_ref().map(|arn| {
                vec![
                    EncryptionConfig::builder()
                        .resources("secrets")
                        .provider(KmsProvider::builder().key_arn(arn).build())
                        .build(),
                ]
            }))
            // The creator administers the cluster through an access entry, as with eksctl.
            .access_config(
                CreateAccessConfigRequest::builder()
                    .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                    .bootstrap_cluster_creator_admin_permissions(true)
                    .build(),
            )
            .set_tags(Some(eks_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err(&what, "CreateCluster")(e)));
        match r {
            Ok(out) => match out.cluster {
                Some(c) if c.status() == Some(&ClusterStatus::Active) => Ok(Step::Done(self.observe(&c).outputs)),
                _ => Ok(Step::Retry {
                    after: CLUSTER_POLL,
                    reason: "CREATING (an EKS control plane takes about 10 minutes)".into(),
                }),
            },
            // A role created seconds ago is not yet assumable everywhere in IAM.
            Err(e) if is(&e, ErrorClass::NotYetVisible) => Ok(Step::Retry {
                after: Duration::from_secs(10),
                reason: "waiting for the cluster role to propagate in IAM".into(),
            }),
            // A cluster of the same name is still being deleted.
            Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: CLUSTER_POLL,
                reason: "a cluster of this name is still being deleted".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Resource for EksCluster {
    resource_metadata!("eks-cluster", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(40 * 60)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("version", self.version.as_str(), Mutability::Immutable)
            .attr("roleArn", inputs.get("role/cluster", "arn"), Mutability::Immutable)
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::Immutable)
            .attr("endpointPublic", self.eks.endpoint_public, Mutability::InPlace)
            .attr("endpointPrivate", self.eks.endpoint_private, Mutability::InPlace)
            .attr("publicAccessCidrs", self.cidrs(), Mutability::InPlace)
            .attr("logging", self.eks.logging.join(","), Mutability::InPlace)
            .attr(
                "secretsKey",
                self.eks.secrets_encryption_key_arn.clone().unwrap_or_default(),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
            // Not a setting: a cluster found CREATING or UPDATING is waited for.
            .attr("status", "ACTIVE", Mutability::InPlace)
    }
    fn diff(&self, actual: Option<&Observed>, desired: &Desired) -> Result<Change, Box<ImmutableChange>> {
        if let Some(a) = actual {
            let have = a.attrs.get("version").cloned().unwrap_or_default();
            if have != self.version {
                let hint = version_hint(&self.name, &have, &self.version);
                return Err(Box::new(ImmutableChange {
                    resource: self.id.clone(),
                    kind: "EKS cluster",
                    attr: "kubernetesVersion",
                    from: have,
                    to: self.version.clone(),
                    hint: Some(hint),
                }));
            }
            let key = a.attrs.get("secretsKey").cloned().unwrap_or_default();
            let want = self.eks.secrets_encryption_key_arn.clone().unwrap_or_default();
            if !key.is_empty() && key != want {
                return Err(Box::new(ImmutableChange {
                    resource: self.id.clone(),
                    kind: "EKS cluster",
                    attr: "secretsEncryptionKeyArn",
                    from: key,
                    to: if want.is_empty() { "(none)".into() } else { want },
                    hint: Some(
                        "EKS cannot remove or replace a secrets encryption key: set spec.eks.secretsEncryptionKeyArn back"
                            .into(),
                    ),
                }));
            }
        }
        diff_attrs(&self.id, self.kind(), actual, desired)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(c) = ctx.inventory.eks_cluster(&ctx.aws).await? else {
            return Ok(None);
        };
        let owner = c.tags().and_then(|t| t.get(tags::CLUSTER));
        if owner != Some(&ctx.cluster) {
            anyhow::bail!(
                "{}: an EKS cluster named {} exists but is not kforge's cluster {} (tag {} is {:?})\n  hint: choose another metadata.name, or delete that cluster",
                self.id,
                self.name,
                ctx.cluster,
                tags::CLUSTER,
                owner
            );
        }
        match c.status() {
            Some(ClusterStatus::Deleting) => Ok(None),
            Some(ClusterStatus::Failed) => Err(self.failed(c)),
            _ => Ok(Some(self.observe(c))),
        }
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let what = format!("{} ({})", self.id, self.name);
        let Some(now) = self.describe(ctx).await? else {
            return self.create(ctx, desired).await;
        };
        match now.status() {
            Some(ClusterStatus::Active) => {}
            Some(ClusterStatus::Failed) => return Err(self.failed(&now)),
            s => {
                return Ok(Step::Retry {
                    after: CLUSTER_POLL,
                    reason: s.map(|s| s.as_str()).unwrap_or("UNKNOWN").to_string(),
                });
            }
        }
        let observed = self.observe(&now);
        let differs =
            |name: &str| observed.attrs.get(name).map(String::as_str) != desired.get(name).and_then(Value::known);
        let eks = ctx.aws.eks();
        let arn = now.arn().unwrap_or_default();
        // Tags are not an "update" in EKS's sense and can go along with one.
        if differs("tags") {
            eks.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(eks_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&what, "TagResource"))?;
        }
        // EKS runs one update at a time: make the next one, then come back once the cluster is ACTIVE again.
        let update = if differs("endpointPublic") || differs("endpointPrivate") || differs("publicAccessCidrs") {
            Some((
                "endpoint access",
                eks.update_cluster_config()
                    .name(&self.name)
                    .resources_vpc_config(self.vpc_request(None))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "UpdateClusterConfig")(e))),
            ))
        } else if differs("logging") {
            let current = observed.attrs.get("logging").cloned().unwrap_or_default();
            Some((
                "logging",
                eks.update_cluster_config()
                    .name(&self.name)
                    .logging(self.logging(&current))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "UpdateClusterConfig")(e))),
            ))
        } else if differs("secretsKey") {
            let arn = self.eks.secrets_encryption_key_arn.clone().unwrap_or_default();
            Some((
                "secrets encryption",
                eks.associate_encryption_config()
                    .cluster_name(&self.name)
                    .encryption_config(
                        EncryptionConfig::builder()
                            .resources("secrets")
                            .provider(KmsProvider::builder().key_arn(arn).build())
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(aws_err(&what, "AssociateEncryptionConfig")(e))),
            ))
        } else {
            None
        };
        match update {
            None => Ok(Step::Done(observed.outputs)),
            Some((_, Err(e))) if is(&e, ErrorClass::InUse) => Ok(Step::Retry {
                after: CLUSTER_POLL,
                reason: "another update of the cluster is in progress".into(),
            }),
            Some((_, Err(e))) => Err(e),
            Some((name, Ok(()))) => Ok(Step::Retry {
                after: SMALL_POLL,
                reason: format!("updating {name}"),
            }),
        }
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_cluster(ctx, &self.name).await
    }
}

/// What to do about a version difference: upgrades go through `kforge upgrade cluster`, one minor at a time.
pub(super) fn version_hint(cluster: &str, have: &str, want: &str) -> String {
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    match (minor(have), minor(want)) {
        (Some(h), Some(w)) if w == h + 1 => format!(
            "run `kforge upgrade cluster {cluster} --to {want}` (control plane, then nodegroups and addons), then apply again"
        ),
        (Some(h), Some(w)) if w > h => {
            let next = format!("1.{}", h + 1);
            format!(
                "EKS upgrades one minor version at a time: run `kforge upgrade cluster {cluster} --to {next}` first"
            )
        }
        _ => format!("EKS cannot downgrade: set spec.kubernetesVersion back to {have}"),
    }
}

/// Deletes the EKS cluster and waits until it is gone; `Blocked` while nodegroups or Fargate profiles remain.
pub async fn delete_cluster(ctx: &Ctx, name: &str) -> anyhow::Result<Step<()>> {
    let eks = ctx.aws.eks();
    let what = format!("eks-cluster ({name})");
    let Some(current) = describe_cluster(&ctx.aws, name, &what).await? else {
        return Ok(Step::Done(()));
    };
    if current.status() == Some(&ClusterStatus::Deleting) {
        return Ok(Step::Retry {
            after: CLUSTER_POLL,
            reason: "DELETING".into(),
        });
    }
    match eks
        .delete_cluster()
        .name(name)
        .send()
        .await
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteCluster")(e)))
    {
        Ok(_) => Ok(Step::Retry {
            after: Duration::ZERO,
            reason: "deletion requested".into(),
        }),
        Err(e) if is(&e, ErrorClass::NotFound) => Ok(Step::Done(())),
        Err(e) if is(&e, ErrorClass::InUse) => Ok(Step::Blocked {
            reason: "nodegroups or Fargate profiles are still attached".into(),
        }),
        Err(e) => Err(e),
    }
}

/// What delete knows about EKS clusters (see `delete::Kind`).
#[derive(Debug)]
pub struct EksClusterKind;

#[async_trait]
impl Kind for EksClusterKind {
    fn name(&self) -> &'static str {
        "eks-cluster"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(own_cluster(ctx)
            .await?
            .map(|(c, vpc)| Doomed::new(kind, c.name().unwrap_or_default(), resource_tag(c.tags()), vpc))
            .into_iter()
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_cluster(ctx, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("eks-addon"),
        ]
    }
}
