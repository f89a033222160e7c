//! Worker instance groups as Auto Scaling groups: sizes, subnets and the launch template version are updated in
//! place; spot groups use a mixed-instances policy (several types, price-capacity-optimized, no on-demand above a
//! base of zero). A new launch template version starts an instance refresh so running workers roll onto it.

use crate::delete::{Doomed, Kind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{
    InstancesDistribution, LaunchTemplate as AsgLaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    MixedInstancesPolicy, Tag as AsgTag,
};

use crate::aws::tags::{self, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, error_code};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, Value, resource_metadata,
};
use crate::model::NodeGroup;

pub struct AutoScalingGroupRes {
    pub id: String,
    /// `kforge-CLUSTER-GROUP`, unique per region.
    pub name: String,
    pub group: NodeGroup,
    /// The launch template resource (outputs `id`, `version`).
    pub launch_template: String,
    /// Subnet resources (output `id`).
    pub subnets: Vec<String>,
    /// Tags of the group; those in `propagated` are also put on the instances it launches.
    pub tags: BTreeMap<String, String>,
    pub propagated: Vec<String>,
    pub deps: Vec<String>,
}

fn outputs(name: &str, arn: Option<&str>) -> Outputs {
    let mut o = Outputs::from([("id".to_string(), name.to_string())]);
    if let Some(a) = arn {
        o.insert("arn".into(), a.to_string());
    }
    o
}

/// Subnet ids as the group lists them: sorted, comma-separated.
fn sorted_csv<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = items.filter(|s| !s.is_empty()).collect();
    v.sort();
    v.join(",")
}

impl AutoScalingGroupRes {
    fn mixed(&self) -> bool {
        self.group.spot || self.group.instance_types.len() > 1
    }

    fn template_spec(&self, desired: &Desired) -> anyhow::Result<LaunchTemplateSpecification> {
        let (id, version) = desired
            .value("launchTemplate")?
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("internal: launch template without version"))?;
        Ok(LaunchTemplateSpecification::builder()
            .launch_template_id(id)
            .version(version)
            .build())
    }

    fn mixed_policy(&self, desired: &Desired) -> anyhow::Result<MixedInstancesPolicy> {
        let overrides = self
            .group
            .instance_types
            .iter()
            .map(|t| LaunchTemplateOverrides::builder().instance_type(t).build())
            .collect();
        let on_demand_above_base = if self.group.spot { 0 } else { 100 };
        Ok(MixedInstancesPolicy::builder()
            .launch_template(
                AsgLaunchTemplate::builder()
                    .launch_template_specification(self.template_spec(desired)?)
                    .set_overrides(Some(overrides))
                    .build(),
            )
            .instances_distribution(
                InstancesDistribution::builder()
                    .on_demand_base_capacity(0)
                    .on_demand_percentage_above_base_capacity(on_demand_above_base)
                    .spot_allocation_strategy("price-capacity-optimized")
                    .build(),
            )
            .build())
    }

    /// The group's tags, for the group named `name` (the found group's own name when it exists).
    fn asg_tags(&self, name: &str) -> Vec<AsgTag> {
        self.tags
            .iter()
            .map(|(k, v)| {
                AsgTag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key(k)
                    .value(v)
                    .propagate_at_launch(self.propagated.contains(k))
                    .build()
            })
            .collect()
    }
}

#[async_trait]
impl Resource for AutoScalingGroupRes {
    resource_metadata!("auto-scaling-group", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(900)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        let template = match (
            inputs.get(&self.launch_template, "id"),
            inputs.get(&self.launch_template, "version"),
        ) {
            (Value::Known(id), Value::Known(v)) => Value::Known(format!("{id}:{v}")),
            _ => Value::Unknown,
        };
        let g = &self.group;
        Desired::default()
            .attr("minSize", g.min_size.to_string(), Mutability::InPlace)
            .attr("maxSize", g.max_size.to_string(), Mutability::InPlace)
            .attr("desiredCapacity", g.desired_size.to_string(), Mutability::InPlace)
            .attr("launchTemplate", template, Mutability::InPlace)
            .attr(
                "instanceTypes",
                if self.mixed() {
                    g.instance_types.join(",")
                } else {
                    "(launch template)".into()
                },
                Mutability::InPlace,
            )
            .attr("spot", g.spot, Mutability::InPlace)
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::InPlace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let groups = ctx.inventory.auto_scaling_groups(&ctx.aws).await?;
        let tag_map = |g: &aws_sdk_autoscaling::types::AutoScalingGroup| -> BTreeMap<String, String> {
            g.tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                .collect()
        };
        let mine: Vec<_> = groups
            .iter()
            // A group being deleted is on its way out; its name is taken until it is gone (apply retries).
            .filter(|g| g.status().is_none_or(|s| !s.contains("Delete")))
            .filter(|g| tag_map(g).get(tags::RESOURCE) == Some(&self.id))
            .collect();
        let g = match mine.as_slice() {
            [] => return Ok(None),
            [g] => *g,
            many => anyhow::bail!(
                "{} Auto Scaling groups are tagged as `{}` of cluster {}: {}\n  hint: keep one, delete the others, then re-run",
                many.len(),
                self.id,
                ctx.cluster,
                many.iter()
                    .map(|g| g.auto_scaling_group_name().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mixed = g.mixed_instances_policy();
        let spec = g.launch_template().cloned().or_else(|| {
            mixed
                .and_then(|m| m.launch_template())
                .and_then(|l| l.launch_template_specification())
                .cloned()
        });
        let template = spec
            .map(|s| {
                format!(
                    "{}:{}",
                    s.launch_template_id().unwrap_or_default(),
                    s.version().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let (types, spot) = match mixed {
            Some(m) => (
                m.launch_template()
                    .map(|l| {
                        l.overrides()
                            .iter()
                            .filter_map(|o| o.instance_type())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
                m.instances_distribution()
                    .and_then(|d| d.on_demand_percentage_above_base_capacity())
                    .is_some_and(|p| p == 0),
            ),
            None => ("(launch template)".to_string(), false),
        };
        let name = g.auto_scaling_group_name().unwrap_or_default();
        Ok(Some(Observed {
            id: name.to_string(),
            attrs: BTreeMap::from([
                ("minSize", g.min_size().unwrap_or_default().to_string()),
                ("maxSize", g.max_size().unwrap_or_default().to_string()),
                ("desiredCapacity", g.desired_capacity().unwrap_or_default().to_string()),
                ("launchTemplate", template),
                ("instanceTypes", types),
                ("spot", spot.to_string()),
                (
                    "subnets",
                    sorted_csv(g.vpc_zone_identifier().unwrap_or_default().split(',')),
                ),
                ("tags", render_subset(&tag_map(g), &self.tags)),
            ]),
            outputs: outputs(name, g.auto_scaling_group_arn()),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let asg = ctx.aws.autoscaling();
        let what = format!("{} ({})", self.id, self.name);
        let g = &self.group;
        let Some(actual) = actual else {
            let mut create = asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(&self.name)
                .min_size(crate::model::aws_i32(g.min_size))
                .max_size(crate::model::aws_i32(g.max_size))
                .desired_capacity(crate::model::aws_i32(g.desired_size))
                .vpc_zone_identifier(desired.value("subnets")?)
                .set_tags(Some(self.asg_tags(&self.name)));
            create = if self.mixed() {
                create.mixed_instances_policy(self.mixed_policy(desired)?)
            } else {
                create.launch_template(self.template_spec(desired)?)
            };
            let r = create.send().await;
            return match r.map_err(|e| anyhow::Error::from(aws_err(&what, "CreateAutoScalingGroup")(e))) {
                Ok(_) => Ok(Step::Done(outputs(&self.name, None))),
                // The previous group of this name is still being deleted.
                Err(e) if error_code(&e) == Some("AlreadyExists") => Ok(Step::Retry {
                    after: Duration::from_secs(10),
                    reason: format!("an earlier group named {} is still being deleted", self.name),
                }),
                Err(e) => Err(e),
            };
        };
        let Change::Update(changes) = change else {
            return Ok(Step::Done(actual.outputs.clone()));
        };
        let changed = |n: &str| changes.iter().any(|c| c.name == n);
        let sizes = ["minSize", "maxSize", "desiredCapacity"];
        let shape = ["launchTemplate", "instanceTypes", "spot", "subnets"];
        if sizes.iter().chain(shape.iter()).any(|n| changed(n)) {
            let mut update = asg.update_auto_scaling_group().auto_scaling_group_name(&actual.id);
            if changed("minSize") {
                update = update.min_size(crate::model::aws_i32(g.min_size));
            }
            if changed("maxSize") {
                update = update.max_size(crate::model::aws_i32(g.max_size));
            }
            if changed("desiredCapacity") {
                update = update.desired_capacity(crate::model::aws_i32(g.desired_size));
            }
            if changed("subnets") {
                update = update.vpc_zone_identifier(desired.value("subnets")?);
            }
            if changed("launchTemplate") || changed("instanceTypes") || changed("spot") {
                update = if self.mixed() {
                    update.mixed_instances_policy(self.mixed_policy(desired)?)
                } else {
                    update.launch_template(self.template_spec(desired)?)
                };
            }
            update.send().await.map_err(aws_err(&what, "UpdateAutoScalingGroup"))?;
        }
        if changed("launchTemplate") || changed("instanceTypes") {
            // New instances start from the new version; the running ones are replaced by `rolling-update`, which
            // drains each first (an instance refresh would terminate them without a drain, as kops also avoids).
            tracing::warn!(
                "{what}: the group launches its new template version from now on; its running instances are out \
                 of date\n  hint: `kforge rolling-update cluster {}` replaces them one at a time, drained first",
                ctx.cluster
            );
        }
        if changed("tags") {
            asg.create_or_update_tags()
                .set_tags(Some(self.asg_tags(&actual.id)))
                .send()
                .await
                .map_err(aws_err(&what, "CreateOrUpdateTags"))?;
        }
        Ok(Step::Done(actual.outputs.clone()))
    }
    async fn ready(&self, ctx: &Ctx, outputs: &Outputs) -> anyhow::Result<Step<()>> {
        let name = outputs.get("id").unwrap_or(&self.name);
        let out = ctx
            .aws
            .autoscaling()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeAutoScalingGroups"))?;
        let in_service = out
            .auto_scaling_groups()
            .first()
            .map(|g| {
                g.instances()
                    .iter()
                    .filter(|i| i.lifecycle_state().is_some_and(|s| s.as_str() == "InService"))
                    .count()
            })
            .unwrap_or(0);
        let want = self.group.desired_size as usize;
        Ok(if in_service >= want {
            Step::Done(())
        } else {
            Step::Retry {
                after: Duration::from_secs(10),
                reason: format!("{in_service} of {want} instances in service"),
            }
        })
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_auto_scaling_group(&ctx.aws, &actual.id).await
    }
}

/// Deletes the group with its instances and waits until it is gone. Safe to call again.
pub async fn delete_auto_scaling_group(aws: &Aws, name: &str) -> anyhow::Result<Step<()>> {
    let asg = aws.autoscaling();
    let what = format!("auto-scaling-group ({name})");
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(aws_err(&what, "DescribeAutoScalingGroups"))?;
    let Some(g) = out.auto_scaling_groups().first() else {
        return Ok(Step::Done(()));
    };
    if g.status().is_some_and(|s| s.contains("Delete")) {
        return Ok(Step::Retry {
            after: Duration::from_secs(5),
            reason: "deleting its instances".into(),
        });
    }
    let r = asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await;
    match r.map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteAutoScalingGroup")(e))) {
        Ok(_) => Ok(Step::Retry {
            after: Duration::from_secs(2),
            reason: "deletion requested".into(),
        }),
        Err(e) if class_of(&e) == ErrorClass::InUse || error_code(&e) == Some("ScalingActivityInProgress") => {
            Ok(Step::Retry {
                after: Duration::from_secs(5),
                reason: "a scaling activity is in progress".into(),
            })
        }
        Err(e) => Err(e),
    }
}

/// What delete knows about Auto Scaling groups (see `delete::Kind`); their instances go with them.
#[derive(Debug)]
pub struct AutoScalingGroupKind;

#[async_trait]
impl Kind for AutoScalingGroupKind {
    fn name(&self) -> &'static str {
        "auto-scaling-group"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .auto_scaling_groups(&ctx.aws)
            .await?
            .iter()
            .map(|g| {
                let logical = g
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(tags::RESOURCE))
                    .and_then(|t| t.value())
                    .map(str::to_string);
                Doomed::new(kind, g.auto_scaling_group_name().unwrap_or_default(), logical, None)
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_auto_scaling_group(&ctx.aws, &item.cloud_id).await
    }
}
