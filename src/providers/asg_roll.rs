//! The cloud side of rolling a `provider: ec2` cluster's worker groups: which instances of its Auto Scaling groups
//! run an older launch-template version than their group launches now (EC2 tags every instance it launches from a
//! template with `aws:ec2launchtemplate:version`), and their replacement: terminated through their group (desired
//! capacity kept, so the group launches new ones) and waited for until the group is back at its desired size with
//! the new instances in service; or, with a surge, the new instances first (desired capacity raised) and the old
//! ones terminated with the capacity lowered again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_autoscaling::types::AutoScalingGroup;

use crate::aws::inventory::Inventory;
use crate::aws::{Aws, aws_err, tags};
use crate::engine::Step;
use crate::engine::wait::Wait;
use crate::progress::{Event, Reporter};
use crate::providers::ec2::GROUP_TAG;

/// The tag EC2 puts on an instance launched from a launch template: the version it was launched from.
const LAUNCHED_VERSION_TAG: &str = "aws:ec2launchtemplate:version";

/// One worker instance of the cluster's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInstance {
    /// The Auto Scaling group's name.
    pub asg: String,
    /// The node group (spec) it belongs to.
    pub group: String,
    pub instance_id: String,
    /// The launch-template version it was launched from (`None`: not tagged, e.g. launched by hand).
    pub launched: Option<String>,
    /// The version its group launches now.
    pub current: String,
}

impl GroupInstance {
    /// The name the bootstrap and the Node use (`hosts::discover_ec2`'s).
    pub fn host_name(&self) -> String {
        format!("{}-{}", self.group, self.instance_id)
    }

    /// Why it is out of date, or `None`.
    pub fn outdated(&self) -> Option<String> {
        match &self.launched {
            Some(v) if *v == self.current => None,
            Some(v) => Some(format!(
                "launch template version {v}, its group launches {}",
                self.current
            )),
            None => Some(format!(
                "not launched from its group's template (version {})",
                self.current
            )),
        }
    }
}

/// The launch template and version a group launches (its own or its mixed-instances policy's).
fn template_of(g: &AutoScalingGroup) -> Option<(String, String)> {
    let spec = g.launch_template().cloned().or_else(|| {
        g.mixed_instances_policy()
            .and_then(|m| m.launch_template())
            .and_then(|l| l.launch_template_specification())
            .cloned()
    })?;
    Some((
        spec.launch_template_id()?.to_string(),
        spec.version().unwrap_or("$Default").to_string(),
    ))
}

/// `$Latest` / `$Default` as the version number they stand for.
async fn resolve_version(aws: &Aws, template: &str, version: &str) -> anyhow::Result<String> {
    if !version.starts_with('$') {
        return Ok(version.to_string());
    }
    let out = aws
        .ec2()
        .describe_launch_templates()
        .launch_template_ids(template)
        .send()
        .await
        .map_err(aws_err(
            format!("launch template {template}"),
            "DescribeLaunchTemplates",
        ))?;
    let lt = out
        .launch_templates()
        .first()
        .ok_or_else(|| anyhow::anyhow!("launch template {template} is gone"))?;
    let n = if version == "$Latest" {
        lt.latest_version_number()
    } else {
        lt.default_version_number()
    };
    Ok(n.map(|n| n.to_string()).unwrap_or_else(|| version.to_string()))
}

/// The cluster's groups as they are now (a fresh listing each call: instances change while they roll).
async fn groups(aws: &Aws, cluster: &str) -> anyhow::Result<Vec<AutoScalingGroup>> {
    Ok(Inventory::new(cluster).auto_scaling_groups(aws).await?.to_vec())
}

/// Every in-service or starting instance of the cluster's worker groups, by group, then instance id.
pub async fn group_instances(aws: &Aws, cluster: &str) -> anyhow::Result<Vec<GroupInstance>> {
    let inventory = Inventory::new(cluster);
    let launched: BTreeMap<String, Option<String>> = inventory
        .instances(aws)
        .await?
        .iter()
        .filter_map(|i| {
            let t = tags::ec2_tag_map(i.tags());
            Some((i.instance_id()?.to_string(), t.get(LAUNCHED_VERSION_TAG).cloned()))
        })
        .collect();
    let mut out = Vec::new();
    for g in inventory.auto_scaling_groups(aws).await? {
        let name = g.auto_scaling_group_name().unwrap_or_default().to_string();
        let group = g
            .tags()
            .iter()
            .find(|t| t.key() == Some(GROUP_TAG))
            .and_then(|t| t.value())
            .unwrap_or(&name)
            .to_string();
        let Some((template, version)) = template_of(g) else {
            continue;
        };
        let current = resolve_version(aws, &template, &version).await?;
        for i in g.instances() {
            let Some(id) = i.instance_id() else { continue };
            if i.lifecycle_state().is_some_and(|s| s.as_str().starts_with("Terminat")) {
                continue;
            }
            out.push(GroupInstance {
                asg: name.clone(),
                group: group.clone(),
                instance_id: id.to_string(),
                launched: launched.get(id).cloned().flatten(),
                current: current.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.asg, &a.instance_id).cmp(&(&b.asg, &b.instance_id)));
    Ok(out)
}

/// The group named `asg` as it is now.
async fn group(aws: &Aws, cluster: &str, asg: &str) -> anyhow::Result<AutoScalingGroup> {
    groups(aws, cluster)
        .await?
        .into_iter()
        .find(|g| g.auto_scaling_group_name() == Some(asg))
        .ok_or_else(|| anyhow::anyhow!("Auto Scaling group {asg} is gone"))
}

/// The ids of the group's instances that are not terminating, and how many of them are in service.
fn live(g: &AutoScalingGroup) -> (BTreeSet<String>, usize) {
    let live: Vec<_> = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state().is_some_and(|s| !s.as_str().starts_with("Terminat")))
        .collect();
    let in_service = live
        .iter()
        .filter(|i| i.lifecycle_state().is_some_and(|s| s.as_str() == "InService"))
        .count();
    (
        live.iter()
            .filter_map(|i| i.instance_id())
            .map(str::to_string)
            .collect(),
        in_service,
    )
}

/// Terminates `old` (instances of one group) through their group; with `decrement`, the group's desired capacity
/// goes down with them (after a surge), else the group replaces them.
pub async fn terminate(
    aws: &Aws,
    old: &[GroupInstance],
    decrement: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    for i in old {
        aws.autoscaling()
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&i.instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(aws_err(
                format!("instance {} of group {}", i.instance_id, i.asg),
                "TerminateInstanceInAutoScalingGroup",
            ))?;
        reporter.event(Event::Note(format!(
            "rolling-update: {} terminated; waiting for group {} to {}",
            i.instance_id,
            i.asg,
            if decrement { "let it go" } else { "replace it" }
        )));
    }
    Ok(())
}

/// Waits until the group `asg` no longer has any of `gone`, is at its desired size with every instance in service,
/// and has `expect_new` instances that `before` did not; returns those.
pub async fn wait_settled(
    aws: &Aws,
    cluster: &str,
    asg: &str,
    before: &BTreeSet<String>,
    gone: &[String],
    expect_new: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    Wait::new(format!("Auto Scaling group {asg}"), timeout)
        .poll(Duration::from_secs(5))
        .until(|| async {
            let g = group(aws, cluster, asg).await?;
            let desired = g.desired_capacity().unwrap_or(0) as usize;
            let (ids, in_service) = live(&g);
            let new: Vec<String> = ids.iter().filter(|id| !before.contains(*id)).cloned().collect();
            if !gone.iter().any(|id| ids.contains(id)) && in_service >= desired && new.len() >= expect_new {
                return Ok(Step::Done(new));
            }
            let left: Vec<String> = gone.iter().filter(|id| ids.contains(*id)).cloned().collect();
            Ok(Step::Blocked {
                reason: format!(
                    "did not settle ({in_service} of {desired} instances in service, {} new of {expect_new} expected, \
                     still there: {}); see its activity history (`aws autoscaling describe-scaling-activities \
                     --auto-scaling-group-name {asg}`), then re-run the rolling update (it resumes)",
                    new.len(),
                    if left.is_empty() {
                        "none".to_string()
                    } else {
                        left.join(", ")
                    }
                ),
            })
        })
        .await
}

/// The group's live instance ids now (what "new" is measured against).
pub async fn live_ids(aws: &Aws, cluster: &str, asg: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(live(&group(aws, cluster, asg).await?).0)
}

/// Raises the group's desired capacity by `extra` (and its maximum, if it must) so replacements start before any
/// old instance goes; returns the maximum to put back afterwards, if it was raised.
pub async fn surge(aws: &Aws, cluster: &str, asg: &str, extra: usize) -> anyhow::Result<Option<i32>> {
    let g = group(aws, cluster, asg).await?;
    let desired = g.desired_capacity().unwrap_or(0) + extra as i32;
    let max = g.max_size().unwrap_or(desired);
    let restore = if desired > max {
        aws.autoscaling()
            .update_auto_scaling_group()
            .auto_scaling_group_name(asg)
            .max_size(desired)
            .send()
            .await
            .map_err(aws_err(format!("Auto Scaling group {asg}"), "UpdateAutoScalingGroup"))?;
        Some(max)
    } else {
        None
    };
    aws.autoscaling()
        .set_desired_capacity()
        .auto_scaling_group_name(asg)
        .desired_capacity(desired)
        .honor_cooldown(false)
        .send()
        .await
        .map_err(aws_err(format!("Auto Scaling group {asg}"), "SetDesiredCapacity"))?;
    Ok(restore)
}

/// Puts back the maximum size a surge raised.
pub async fn restore_max(aws: &Aws, asg: &str, max: i32) -> anyhow::Result<()> {
    aws.autoscaling()
        .update_auto_scaling_group()
        .auto_scaling_group_name(asg)
        .max_size(max)
        .send()
        .await
        .map_err(aws_err(format!("Auto Scaling group {asg}"), "UpdateAutoScalingGroup"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group that never replaces its instance (what moto cannot show: it always replaces; answered here by
    /// aws-smithy-mocks) makes the wait end at its deadline as a deadline (exit 4), naming what is still there.
    #[tokio::test]
    async fn a_group_that_never_settles_ends_at_the_deadline_naming_what_is_left() {
        use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
        use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState, TagDescription};
        use aws_smithy_mocks::{RuleMode, mock};

        let stuck = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            let old = Instance::builder()
                .instance_id("i-old")
                .availability_zone("us-east-1a")
                .lifecycle_state(LifecycleState::InService)
                .health_status("Healthy")
                .protected_from_scale_in(false)
                .build();
            let group = AutoScalingGroup::builder()
                .auto_scaling_group_name("kforge-c.workers")
                .min_size(1)
                .max_size(2)
                .desired_capacity(2)
                .default_cooldown(300)
                .availability_zones("us-east-1a")
                .health_check_type("EC2")
                .created_time(aws_sdk_autoscaling::primitives::DateTime::from_secs(0))
                .tags(TagDescription::builder().key(tags::CLUSTER).value("c").build())
                .instances(old)
                .build();
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(group)
                .build()
        });
        let client = crate::aws::mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&stuck]);
        let aws = Aws::with_autoscaling(client);
        let before = BTreeSet::from(["i-old".to_string()]);
        let err = wait_settled(
            &aws,
            "c",
            "kforge-c.workers",
            &before,
            &["i-old".to_string()],
            1,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        let timed_out = err
            .downcast_ref::<crate::engine::executor::TimedOut>()
            .expect("a deadline, not a failure");
        assert_eq!(timed_out.waited, Duration::from_secs(1));
        let text = err.to_string();
        assert!(
            text.contains("1 of 2 instances in service, 0 new of 1 expected, still there: i-old"),
            "{text}"
        );
        assert!(
            stuck.num_calls() >= 2,
            "asked again after waiting: {}",
            stuck.num_calls()
        );
    }

    #[test]
    fn an_instance_is_out_of_date_when_its_launch_version_is_not_its_groups() {
        let mut i = GroupInstance {
            asg: "kforge-c-workers".into(),
            group: "workers".into(),
            instance_id: "i-1".into(),
            launched: Some("2".into()),
            current: "2".into(),
        };
        assert_eq!(i.outdated(), None);
        assert_eq!(i.host_name(), "workers-i-1");
        i.current = "3".into();
        assert!(i.outdated().unwrap().contains("version 2, its group launches 3"));
        i.launched = None;
        assert!(i.outdated().is_some());
    }
}
