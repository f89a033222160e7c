//! The instance profiles of masters and nodes, each holding its role.

use super::*;

/// An IAM instance profile holding one of the cluster's roles, under the cluster's IAM path.
pub struct InstanceProfileRes {
    pub id: String,
    pub name: String,
    pub cluster: String,
    /// The role resource (output `id` is the role name).
    pub role: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

pub(super) fn profile_outputs(p: &aws_sdk_iam::types::InstanceProfile) -> Outputs {
    Outputs::from([
        ("id".to_string(), p.instance_profile_name().to_string()),
        ("arn".to_string(), p.arn().to_string()),
    ])
}

#[async_trait]
impl Resource for InstanceProfileRes {
    resource_metadata!("instance-profile", Phase::Security);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("role", inputs.get(&self.role, "id"), Mutability::InPlace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let r = ctx
            .aws
            .iam()
            .get_instance_profile()
            .instance_profile_name(&self.name)
            .send()
            .await;
        let p = match r {
            Ok(out) => match out.instance_profile {
                Some(p) => p,
                None => return Ok(None),
            },
            Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => return Ok(None),
            Err(e) => {
                return Err(aws_err(format!("{} ({})", self.id, self.name), "GetInstanceProfile")(e).into());
            }
        };
        if p.path() != role_path(&self.cluster) {
            anyhow::bail!(
                "{}: instance profile {} exists but is not kforge's profile of cluster {} (path {})\n  hint: delete or rename that profile, then re-run",
                self.id,
                self.name,
                self.cluster,
                p.path()
            );
        }
        let tags: BTreeMap<String, String> = p
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        let roles: Vec<&str> = p.roles().iter().map(|r| r.role_name()).collect();
        Ok(Some(Observed {
            id: self.name.clone(),
            attrs: BTreeMap::from([("role", roles.join(",")), ("tags", render_subset(&tags, &self.tags))]),
            outputs: profile_outputs(&p),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let iam = ctx.aws.iam();
        let what = format!("{} ({})", self.id, self.name);
        let role = desired.value("role")?;
        let out = match actual {
            None => {
                let created = iam
                    .create_instance_profile()
                    .instance_profile_name(&self.name)
                    .path(role_path(&self.cluster))
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&what, "CreateInstanceProfile"))?;
                let p = created
                    .instance_profile
                    .ok_or_else(|| anyhow::anyhow!("{what}: CreateInstanceProfile returned no profile"))?;
                profile_outputs(&p)
            }
            Some(a) => a.outputs.clone(),
        };
        let role_changed = match change {
            Change::Update(cs) => cs.iter().any(|c| c.name == "role"),
            _ => true,
        };
        if role_changed {
            if let Some(a) = actual {
                for old in a.attrs.get("role").into_iter().flat_map(|r| r.split(',')) {
                    if !old.is_empty() && old != role {
                        iam.remove_role_from_instance_profile()
                            .instance_profile_name(&self.name)
                            .role_name(old)
                            .send()
                            .await
                            .map_err(aws_err(&what, "RemoveRoleFromInstanceProfile"))?;
                    }
                }
            }
            iam.add_role_to_instance_profile()
                .instance_profile_name(&self.name)
                .role_name(role)
                .send()
                .await
                .map_err(aws_err(&what, "AddRoleToInstanceProfile"))?;
        }
        if matches!(change, Change::Update(cs) if cs.iter().any(|c| c.name == "tags")) {
            iam.tag_instance_profile()
                .instance_profile_name(&self.name)
                .set_tags(Some(iam_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&what, "TagInstanceProfile"))?;
        }
        Ok(Step::Done(out))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_instance_profile(&ctx.aws, &self.name).await
    }
}

/// Takes the roles out of the profile, then deletes it. Safe to call again.
pub async fn delete_instance_profile(aws: &Aws, name: &str) -> anyhow::Result<Step<()>> {
    let iam = aws.iam();
    let what = format!("instance-profile ({name})");
    let work = async {
        let p = iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(aws_err(&what, "GetInstanceProfile"))?;
        for r in p.instance_profile().map(|p| p.roles()).unwrap_or_default() {
            iam.remove_role_from_instance_profile()
                .instance_profile_name(name)
                .role_name(r.role_name())
                .send()
                .await
                .map_err(aws_err(&what, "RemoveRoleFromInstanceProfile"))?;
        }
        iam.delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(aws_err(&what, "DeleteInstanceProfile"))?;
        Ok::<_, anyhow::Error>(())
    };
    match work.await {
        Ok(()) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("{what} is still used by an instance"),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- machine image

/// What delete knows about instance profiles (see `delete::Kind`): those under the cluster's IAM path.
#[derive(Debug)]
pub struct InstanceProfileKind;

#[async_trait]
impl Kind for InstanceProfileKind {
    fn name(&self) -> &'static str {
        "instance-profile"
    }
    fn phase(&self) -> Phase {
        Phase::Security
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        // Profiles are named `kforge-CLUSTER-WHICH` for `instance-profile/WHICH`.
        let prefix = format!("kforge-{}-", ctx.cluster);
        Ok(ctx
            .inventory
            .instance_profiles(&ctx.aws)
            .await?
            .iter()
            .map(|p| {
                let name = p.instance_profile_name();
                let logical = name
                    .strip_prefix(&prefix)
                    .map(|which| format!("instance-profile/{which}"));
                Doomed::new(kind, name, logical, None)
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_instance_profile(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("auto-scaling-group"), Order::Kind("instance")]
    }
}
