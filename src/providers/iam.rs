//! IAM roles kforge creates for a cluster: a trust policy, AWS managed policies attached, kforge's tags, and the
//! path `/kforge/CLUSTER/` (IAM cannot list by tag; delete lists by path). Roles named in the spec instead are only
//! looked up. Shared by every provider that needs roles.

use crate::delete::{Doomed, Kind, Order};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::aws::inventory::role_path;
use crate::aws::tags::{self, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, is_not_found};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, resource_metadata,
};

/// A role kforge owns.
pub struct IamRole {
    pub id: String,
    pub name: String,
    pub cluster: String,
    /// The AWS service that assumes the role (`eks.amazonaws.com`, `ec2.amazonaws.com`).
    pub service: String,
    /// Managed policy names (`AmazonEKSClusterPolicy`), completed into ARNs of the run's partition.
    pub managed_policies: Vec<String>,
    /// kforge's own least-privilege policy, put on the role as the inline policy [`INLINE_POLICY`].
    pub inline_policy: Option<serde_json::Value>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

/// Name of the inline policy kforge puts on its roles.
pub const INLINE_POLICY: &str = "kforge";

async fn inline_policy(aws: &Aws, role: &str) -> anyhow::Result<Option<serde_json::Value>> {
    match aws
        .iam()
        .get_role_policy()
        .role_name(role)
        .policy_name(INLINE_POLICY)
        .send()
        .await
    {
        Ok(out) => Ok(Some(decode_policy(out.policy_document()))),
        Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => Ok(None),
        Err(e) => Err(aws_err(format!("role {role}"), "GetRolePolicy")(e).into()),
    }
}

fn render_inline(p: Option<&serde_json::Value>) -> String {
    p.map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
}

impl IamRole {
    fn trust_policy(&self) -> serde_json::Value {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": self.service},
                "Action": "sts:AssumeRole"
            }]
        })
    }

    fn policy_arns(&self, partition: &str) -> BTreeSet<String> {
        self.managed_policies
            .iter()
            .map(|p| format!("arn:{partition}:iam::aws:policy/{p}"))
            .collect()
    }
}

fn outputs(arn: &str, name: &str) -> Outputs {
    Outputs::from([
        ("id".to_string(), name.to_string()),
        ("arn".to_string(), arn.to_string()),
    ])
}

/// IAM returns policy documents URL-encoded; compare them as JSON values.
fn decode_policy(doc: &str) -> serde_json::Value {
    let decoded = percent_decode(doc);
    serde_json::from_str(&decoded).unwrap_or(serde_json::Value::String(decoded))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn attached_policies(aws: &Aws, role: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut pages = aws
        .iam()
        .list_attached_role_policies()
        .role_name(role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err(format!("role {role}"), "ListAttachedRolePolicies"))?;
        out.extend(
            page.attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string)),
        );
    }
    Ok(out)
}

#[async_trait]
impl Resource for IamRole {
    resource_metadata!("iam-role", Phase::Security);
    fn desired(&self, _: &Inputs) -> Desired {
        // Policies by name: find strips the partition's ARN prefix, so the same spec diffs alike in every partition.
        Desired::default()
            .attr("trustPolicy", self.trust_policy().to_string(), Mutability::InPlace)
            .attr(
                "policies",
                join(&self.managed_policies.iter().cloned().collect()),
                Mutability::InPlace,
            )
            .attr(
                "inlinePolicy",
                render_inline(self.inline_policy.as_ref()),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let r = ctx.aws.iam().get_role().role_name(&self.name).send().await;
        let role = match r {
            Ok(out) => match out.role {
                Some(role) => role,
                None => return Ok(None),
            },
            Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => return Ok(None),
            Err(e) => return Err(aws_err(format!("{} (role {})", self.id, self.name), "GetRole")(e).into()),
        };
        let role_tags: BTreeMap<String, String> = role
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        if role_tags.get(tags::CLUSTER) != Some(&self.cluster) {
            anyhow::bail!(
                "{}: IAM role {} exists but is not kforge's role of cluster {} (tag {} is {:?})\n  hint: delete or rename that role, or name it in spec.iam to use it as is",
                self.id,
                self.name,
                self.cluster,
                tags::CLUSTER,
                role_tags.get(tags::CLUSTER)
            );
        }
        let prefix = format!("arn:{}:iam::aws:policy/", ctx.aws.partition());
        let policies: BTreeSet<String> = attached_policies(&ctx.aws, &self.name)
            .await?
            .into_iter()
            .map(|arn| arn.strip_prefix(&prefix).map(str::to_string).unwrap_or(arn))
            .collect();
        let trust = role
            .assume_role_policy_document()
            .map(decode_policy)
            .unwrap_or_default();
        let inline = inline_policy(&ctx.aws, &self.name).await?;
        Ok(Some(Observed {
            id: self.name.clone(),
            attrs: BTreeMap::from([
                ("trustPolicy", trust.to_string()),
                ("policies", join(&policies)),
                ("inlinePolicy", render_inline(inline.as_ref())),
                ("tags", render_subset(&role_tags, &self.tags)),
            ]),
            outputs: outputs(role.arn(), role.role_name()),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let iam = ctx.aws.iam();
        let what = format!("{} (role {})", self.id, self.name);
        let out = match actual {
            None => {
                let created = iam
                    .create_role()
                    .role_name(&self.name)
                    .path(role_path(&self.cluster))
                    .assume_role_policy_document(self.trust_policy().to_string())
                    .description(format!("kforge {} of cluster {}", self.id, self.cluster))
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&what, "CreateRole"))?;
                let role = created
                    .role
                    .ok_or_else(|| anyhow::anyhow!("{what}: CreateRole returned no role"))?;
                outputs(role.arn(), role.role_name())
            }
            Some(a) => {
                if let Change::Update(changes) = change {
                    for c in changes {
                        match c.name {
                            "trustPolicy" => {
                                iam.update_assume_role_policy()
                                    .role_name(&self.name)
                                    .policy_document(self.trust_policy().to_string())
                                    .send()
                                    .await
                                    .map_err(aws_err(&what, "UpdateAssumeRolePolicy"))?;
                            }
                            "tags" => {
                                iam.tag_role()
                                    .role_name(&self.name)
                                    .set_tags(Some(iam_tags(&self.tags)))
                                    .send()
                                    .await
                                    .map_err(aws_err(&what, "TagRole"))?;
                            }
                            _ => {}
                        }
                    }
                }
                a.outputs.clone()
            }
        };
        // Attach what is missing and detach what the spec no longer wants (policies attached by hand included:
        // the role is kforge's).
        let wanted = self.policy_arns(ctx.aws.partition());
        let have = if actual.is_some() {
            attached_policies(&ctx.aws, &self.name).await?
        } else {
            BTreeSet::new()
        };
        let what = what.as_str();
        let attach = wanted.difference(&have).map(|arn| async move {
            iam.attach_role_policy()
                .role_name(&self.name)
                .policy_arn(arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| anyhow::Error::from(aws_err(format!("{what}: policy {arn}"), "AttachRolePolicy")(e)))
        });
        let detach = have.difference(&wanted).map(|arn| async move {
            iam.detach_role_policy()
                .role_name(&self.name)
                .policy_arn(arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| anyhow::Error::from(aws_err(format!("{what}: policy {arn}"), "DetachRolePolicy")(e)))
        });
        let (attached, detached) = tokio::join!(futures::future::join_all(attach), futures::future::join_all(detach));
        for r in attached.into_iter().chain(detached) {
            r?;
        }
        let inline_changed = match change {
            Change::Update(cs) => cs.iter().any(|c| c.name == "inlinePolicy"),
            _ => actual.is_none(),
        };
        if inline_changed {
            match &self.inline_policy {
                Some(doc) => {
                    iam.put_role_policy()
                        .role_name(&self.name)
                        .policy_name(INLINE_POLICY)
                        .policy_document(doc.to_string())
                        .send()
                        .await
                        .map_err(aws_err(what, "PutRolePolicy"))?;
                }
                None if actual.is_some() => {
                    let r = iam
                        .delete_role_policy()
                        .role_name(&self.name)
                        .policy_name(INLINE_POLICY)
                        .send()
                        .await;
                    if let Err(e) = r
                        && crate::aws::sdk_class(&e) != crate::aws::ErrorClass::NotFound
                    {
                        return Err(aws_err(what, "DeleteRolePolicy")(e).into());
                    }
                }
                None => {}
            }
        }
        Ok(Step::Done(out))
    }
    async fn delete(&self, ctx: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        delete_role(&ctx.aws, &self.name).await
    }
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(",")
}

pub(crate) fn iam_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().ok())
        .collect()
}

/// Detaches the role's managed policies, deletes its inline ones, takes it out of instance profiles, then deletes
/// it. Safe to call again.
pub async fn delete_role(aws: &Aws, name: &str) -> anyhow::Result<Step<()>> {
    let iam = aws.iam();
    let what = format!("role {name}");
    let gone = is_not_found;
    let cleanup = async {
        for arn in attached_policies(aws, name).await? {
            iam.detach_role_policy()
                .role_name(name)
                .policy_arn(&arn)
                .send()
                .await
                .map_err(aws_err(&what, "DetachRolePolicy"))?;
        }
        let inline = iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(aws_err(&what, "ListRolePolicies"))?;
        for policy in inline.policy_names() {
            iam.delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(aws_err(&what, "DeleteRolePolicy"))?;
        }
        let profiles = iam
            .list_instance_profiles_for_role()
            .role_name(name)
            .send()
            .await
            .map_err(aws_err(&what, "ListInstanceProfilesForRole"))?;
        for p in profiles.instance_profiles() {
            iam.remove_role_from_instance_profile()
                .role_name(name)
                .instance_profile_name(p.instance_profile_name())
                .send()
                .await
                .map_err(aws_err(&what, "RemoveRoleFromInstanceProfile"))?;
        }
        iam.delete_role()
            .role_name(name)
            .send()
            .await
            .map_err(aws_err(&what, "DeleteRole"))?;
        Ok::<_, anyhow::Error>(())
    };
    match cleanup.await {
        Ok(()) => Ok(Step::Done(())),
        Err(e) if gone(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("{what} is still in use"),
        }),
        Err(e) => Err(e),
    }
}

/// A role named in the spec: only looked up, never changed or deleted.
pub struct ExistingRole {
    pub id: String,
    pub arn: String,
    pub field: &'static str,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for ExistingRole {
    resource_metadata!("existing-iam-role", Phase::Security);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let name = self.arn.rsplit('/').next().unwrap_or_default();
        match ctx.aws.iam().get_role().role_name(name).send().await {
            Ok(out) => Ok(out.role.map(|r| Observed {
                id: name.to_string(),
                attrs: BTreeMap::new(),
                outputs: outputs(r.arn(), r.role_name()),
            })),
            Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => Ok(None),
            Err(e) => Err(aws_err(format!("{} {}", self.field, self.arn), "GetRole")(e).into()),
        }
    }
    async fn apply(&self, _: &Ctx, _: &Change, _: Option<&Observed>, _: &Desired) -> anyhow::Result<Step<Outputs>> {
        anyhow::bail!(
            "{}: role {} does not exist\n  hint: check the ARN, or remove it to have kforge create the role",
            self.field,
            self.arn
        )
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

/// What delete knows about IAM roles (see `delete::Kind`): the roles under the cluster's path.
#[derive(Debug)]
pub struct IamRoleKind;

#[async_trait]
impl Kind for IamRoleKind {
    fn name(&self) -> &'static str {
        "iam-role"
    }
    fn phase(&self) -> Phase {
        Phase::Security
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        // Role listings carry no tags; kforge's role names are `kforge-CLUSTER-WHICH` for `role/WHICH`.
        let prefix = format!("kforge-{}-", ctx.cluster);
        Ok(ctx
            .inventory
            .roles(&ctx.aws)
            .await?
            .iter()
            .map(|r| {
                let logical = r.role_name().strip_prefix(&prefix).map(|which| format!("role/{which}"));
                Doomed::new(kind, r.role_name(), logical, None)
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_role(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // Roles go once what assumes them is gone.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("eks-addon"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
            Order::Kind("instance-profile"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_compare_as_json() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            decode_policy(encoded),
            serde_json::json!({"Version": "2012-10-17", "Statement": []})
        );
        assert_eq!(decode_policy("{\"a\": 1}"), serde_json::json!({"a": 1}));
    }
}
