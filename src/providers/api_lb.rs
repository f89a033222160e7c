//! The Kubernetes API endpoint of a self-built cluster with several masters: a network load balancer with a TCP
//! 6443 listener forwarding to a target group that holds every master. (With one master the endpoint is the
//! master's own address.)

use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, IpAddressType, LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TargetDescription, TargetTypeEnum,
};
use sha2::Digest as _;

use crate::aws::tags::{self, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, is_not_found, sdk_class};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, resource_metadata,
};

pub const API_PORT: i32 = 6443;

/// An ELBv2 name (at most 32 characters, unique per region): `kforge-CLUSTER-SUFFIX`, or for long cluster names
/// a prefix of it made unique by a hash of the whole.
pub fn elb_name(cluster: &str, suffix: &str) -> String {
    let full = format!("kforge-{cluster}-{suffix}");
    if full.len() <= 32 {
        return full;
    }
    let hash = sha2::Sha256::digest(full.as_bytes());
    let hash: String = hash.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let keep = 32 - suffix.len() - hash.len() - 4;
    let prefix = cluster[..keep.min(cluster.len())].trim_end_matches('-');
    format!("k-{prefix}-{hash}-{suffix}")
}

fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The ARN of the ELBv2 object of the cluster tagged `logical`.
fn tagged_arn<'a>(
    items: &'a [crate::aws::inventory::Tagged],
    logical: &str,
) -> Option<&'a crate::aws::inventory::Tagged> {
    items
        .iter()
        .find(|t| t.tags.get(tags::RESOURCE).map(String::as_str) == Some(logical))
}

fn csv(v: &str) -> Vec<String> {
    v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

// ---------------------------------------------------------------- load balancer

/// `DNS:6443` of the cluster's API load balancer, if it has one.
pub async fn api_endpoint(aws: &Aws, cluster: &str) -> anyhow::Result<Option<String>> {
    let inv = crate::aws::inventory::Inventory::new(cluster);
    let Some(lb) = tagged_arn(inv.load_balancers(aws).await?, "load-balancer/api") else {
        return Ok(None);
    };
    let out = aws
        .elbv2()
        .describe_load_balancers()
        .load_balancer_arns(&lb.arn)
        .send()
        .await
        .map_err(aws_err("load-balancer/api", "DescribeLoadBalancers"))?;
    Ok(out
        .load_balancers()
        .first()
        .and_then(|l| l.dns_name())
        .map(|d| format!("{d}:{API_PORT}")))
}

pub struct ApiLoadBalancer {
    pub id: String,
    pub name: String,
    pub internal: bool,
    /// Subnet resources, one per zone.
    pub subnets: Vec<String>,
    pub security_group: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

fn lb_outputs(arn: &str, dns: &str) -> Outputs {
    Outputs::from([
        ("id".to_string(), arn.to_string()),
        ("arn".to_string(), arn.to_string()),
        ("dnsName".to_string(), dns.to_string()),
    ])
}

#[async_trait]
impl Resource for ApiLoadBalancer {
    resource_metadata!("load-balancer", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(600)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr(
                "scheme",
                if self.internal { "internal" } else { "internet-facing" },
                Mutability::Replace,
            )
            .attr("subnets", inputs.joined_ids(&self.subnets), Mutability::InPlace)
            .attr(
                "securityGroups",
                inputs.get(&self.security_group, "id"),
                Mutability::InPlace,
            )
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let lbs = ctx.inventory.load_balancers(&ctx.aws).await?;
        let Some(t) = tagged_arn(lbs, &self.id) else {
            return Ok(None);
        };
        let out = ctx
            .aws
            .elbv2()
            .describe_load_balancers()
            .load_balancer_arns(&t.arn)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeLoadBalancers"))?;
        let Some(lb) = out.load_balancers().first() else {
            return Ok(None);
        };
        let subnets: Vec<&str> = lb.availability_zones().iter().filter_map(|z| z.subnet_id()).collect();
        let mut subnets = subnets;
        subnets.sort();
        let mut groups: Vec<&str> = lb.security_groups().iter().map(String::as_str).collect();
        groups.sort();
        Ok(Some(Observed {
            id: t.arn.clone(),
            attrs: BTreeMap::from([
                (
                    "scheme",
                    lb.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
                ),
                ("subnets", subnets.join(",")),
                ("securityGroups", groups.join(",")),
                ("tags", render_subset(&t.tags, &self.tags)),
            ]),
            outputs: lb_outputs(&t.arn, lb.dns_name().unwrap_or_default()),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let what = format!("{} ({})", self.id, self.name);
        let Some(actual) = actual else {
            let out = elb
                .create_load_balancer()
                .name(&self.name)
                .r#type(LoadBalancerTypeEnum::Network)
                .scheme(if self.internal {
                    LoadBalancerSchemeEnum::Internal
                } else {
                    LoadBalancerSchemeEnum::InternetFacing
                })
                .ip_address_type(IpAddressType::Ipv4)
                .set_subnets(Some(csv(desired.value("subnets")?)))
                .security_groups(desired.value("securityGroups")?)
                .set_tags(Some(elb_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&what, "CreateLoadBalancer"))?;
            let lb = out
                .load_balancers()
                .first()
                .ok_or_else(|| anyhow::anyhow!("{what}: CreateLoadBalancer returned nothing"))?;
            return Ok(Step::Done(lb_outputs(
                lb.load_balancer_arn().unwrap_or_default(),
                lb.dns_name().unwrap_or_default(),
            )));
        };
        if let Change::Update(changes) = change {
            for c in changes {
                match c.name {
                    "subnets" => {
                        elb.set_subnets()
                            .load_balancer_arn(&actual.id)
                            .set_subnets(Some(csv(desired.value("subnets")?)))
                            .send()
                            .await
                            .map_err(aws_err(&what, "SetSubnets"))?;
                    }
                    "securityGroups" => {
                        elb.set_security_groups()
                            .load_balancer_arn(&actual.id)
                            .security_groups(desired.value("securityGroups")?)
                            .send()
                            .await
                            .map_err(aws_err(&what, "SetSecurityGroups"))?;
                    }
                    "tags" => {
                        elb.add_tags()
                            .resource_arns(&actual.id)
                            .set_tags(Some(elb_tags(&self.tags)))
                            .send()
                            .await
                            .map_err(aws_err(&what, "AddTags"))?;
                    }
                    _ => {}
                }
            }
        }
        Ok(Step::Done(actual.outputs.clone()))
    }
    async fn ready(&self, ctx: &Ctx, outputs: &Outputs) -> anyhow::Result<Step<()>> {
        let arn = outputs.get("arn").map(String::as_str).unwrap_or_default();
        let out = ctx
            .aws
            .elbv2()
            .describe_load_balancers()
            .load_balancer_arns(arn)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeLoadBalancers"))?;
        let state = out
            .load_balancers()
            .first()
            .and_then(|l| l.state())
            .and_then(|s| s.code())
            .cloned();
        match state {
            Some(LoadBalancerStateEnum::Active) | None => Ok(Step::Done(())),
            Some(LoadBalancerStateEnum::Provisioning) => Ok(Step::Retry {
                after: Duration::from_secs(10),
                reason: "provisioning".into(),
            }),
            Some(other) => anyhow::bail!("{} is {}", self.id, other.as_str()),
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_load_balancer(&ctx.aws, &actual.id).await
    }
}

/// Deletes the load balancer (its listeners go with it) and waits until it is gone.
pub async fn delete_load_balancer(aws: &Aws, arn: &str) -> anyhow::Result<Step<()>> {
    let elb = aws.elbv2();
    let what = format!("load-balancer ({arn})");
    let exists = match elb.describe_load_balancers().load_balancer_arns(arn).send().await {
        Ok(out) => !out.load_balancers().is_empty(),
        Err(e) if sdk_class(&e) == ErrorClass::NotFound => false,
        Err(e) => return Err(aws_err(&what, "DescribeLoadBalancers")(e).into()),
    };
    if !exists {
        return Ok(Step::Done(()));
    }
    elb.delete_load_balancer()
        .load_balancer_arn(arn)
        .send()
        .await
        .map_err(aws_err(&what, "DeleteLoadBalancer"))?;
    // Deletion is asynchronous: come back to see it gone.
    Ok(Step::Retry {
        after: Duration::from_secs(2),
        reason: "deletion requested".into(),
    })
}

/// Deletes a target group; blocked while a listener still forwards to it.
pub async fn delete_target_group(aws: &Aws, arn: &str) -> anyhow::Result<Step<()>> {
    let r = aws.elbv2().delete_target_group().target_group_arn(arn).send().await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("target-group ({arn})"), "DeleteTargetGroup")(e))) {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("target group {arn} is still in use"),
        }),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- target group

pub struct ApiTargetGroup {
    pub id: String,
    pub name: String,
    pub vpc: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for ApiTargetGroup {
    resource_metadata!("target-group", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get(&self.vpc, "id"), Mutability::Replace)
            .attr("target", format!("TCP:{API_PORT} instance"), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let tgs = ctx.inventory.target_groups(&ctx.aws).await?;
        let Some(t) = tagged_arn(tgs, &self.id) else {
            return Ok(None);
        };
        let out = ctx
            .aws
            .elbv2()
            .describe_target_groups()
            .target_group_arns(&t.arn)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeTargetGroups"))?;
        let Some(tg) = out.target_groups().first() else {
            return Ok(None);
        };
        Ok(Some(Observed {
            id: t.arn.clone(),
            attrs: BTreeMap::from([
                ("vpc", tg.vpc_id().unwrap_or_default().to_string()),
                (
                    "target",
                    format!(
                        "{}:{} {}",
                        tg.protocol().map(|p| p.as_str()).unwrap_or_default(),
                        tg.port().unwrap_or_default(),
                        tg.target_type().map(|t| t.as_str()).unwrap_or_default()
                    ),
                ),
                ("tags", render_subset(&t.tags, &self.tags)),
            ]),
            outputs: Outputs::from([("id".to_string(), t.arn.clone()), ("arn".to_string(), t.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let what = format!("{} ({})", self.id, self.name);
        if let Some(actual) = actual {
            if matches!(change, Change::Update(_)) {
                elb.add_tags()
                    .resource_arns(&actual.id)
                    .set_tags(Some(elb_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&what, "AddTags"))?;
            }
            return Ok(Step::Done(actual.outputs.clone()));
        }
        let out = elb
            .create_target_group()
            .name(&self.name)
            .protocol(ProtocolEnum::Tcp)
            .port(API_PORT)
            .vpc_id(desired.value("vpc")?)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::Tcp)
            .health_check_interval_seconds(10)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(aws_err(&what, "CreateTargetGroup"))?;
        let arn = out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .ok_or_else(|| anyhow::anyhow!("{what}: CreateTargetGroup returned nothing"))?;
        Ok(Step::Done(Outputs::from([
            ("id".to_string(), arn.to_string()),
            ("arn".to_string(), arn.to_string()),
        ])))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_target_group(&ctx.aws, &actual.id).await
    }
}

// ---------------------------------------------------------------- listener

pub struct ApiListener {
    pub id: String,
    pub load_balancer: String,
    pub target_group: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

async fn own_lb_arn(ctx: &Ctx, logical: &str) -> anyhow::Result<Option<String>> {
    let lbs = ctx.inventory.load_balancers(&ctx.aws).await?;
    Ok(tagged_arn(lbs, logical).map(|t| t.arn.clone()))
}

#[async_trait]
impl Resource for ApiListener {
    resource_metadata!("listener", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr(
                "loadBalancer",
                inputs.get(&self.load_balancer, "arn"),
                Mutability::Replace,
            )
            .attr("forwardTo", inputs.get(&self.target_group, "arn"), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let Some(lb) = own_lb_arn(ctx, &self.load_balancer).await? else {
            return Ok(None);
        };
        let out = ctx
            .aws
            .elbv2()
            .describe_listeners()
            .load_balancer_arn(&lb)
            .send()
            .await
            .map_err(aws_err(&self.id, "DescribeListeners"))?;
        let Some(l) = out.listeners().iter().find(|l| l.port() == Some(API_PORT)) else {
            return Ok(None);
        };
        let forward = l
            .default_actions()
            .iter()
            .find_map(|a| a.target_group_arn())
            .unwrap_or_default();
        let arn = l.listener_arn().unwrap_or_default();
        Ok(Some(Observed {
            id: arn.to_string(),
            attrs: BTreeMap::from([("loadBalancer", lb.clone()), ("forwardTo", forward.to_string())]),
            outputs: Outputs::from([("id".to_string(), arn.to_string())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(desired.value("forwardTo")?)
            .build();
        if let Some(actual) = actual {
            elb.modify_listener()
                .listener_arn(&actual.id)
                .default_actions(forward)
                .send()
                .await
                .map_err(aws_err(&self.id, "ModifyListener"))?;
            return Ok(Step::Done(actual.outputs.clone()));
        }
        let out = elb
            .create_listener()
            .load_balancer_arn(desired.value("loadBalancer")?)
            .protocol(ProtocolEnum::Tcp)
            .port(API_PORT)
            .default_actions(forward)
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(aws_err(&self.id, "CreateListener"))?;
        let arn = out
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .unwrap_or_default();
        Ok(Step::Done(Outputs::from([("id".to_string(), arn.to_string())])))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        let r = ctx.aws.elbv2().delete_listener().listener_arn(&actual.id).send().await;
        match r.map_err(|e| anyhow::Error::from(aws_err(&self.id, "DeleteListener")(e))) {
            Ok(_) => Ok(Step::Done(())),
            Err(e) if is_not_found(&e) => Ok(Step::Done(())),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------- targets

/// The masters registered in the API target group.
pub struct ApiTargets {
    pub id: String,
    pub target_group: String,
    /// Master instance resources (output `id`).
    pub masters: Vec<String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for ApiTargets {
    resource_metadata!("target-registration", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr(
                "targetGroup",
                inputs.get(&self.target_group, "arn"),
                Mutability::Replace,
            )
            .attr("instances", inputs.joined_ids(&self.masters), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let tgs = ctx.inventory.target_groups(&ctx.aws).await?;
        let Some(tg) = tagged_arn(tgs, &self.target_group) else {
            return Ok(None);
        };
        let targets = registered(&ctx.aws, &tg.arn).await?;
        if targets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Observed {
            id: tg.arn.clone(),
            attrs: BTreeMap::from([("targetGroup", tg.arn.clone()), ("instances", targets.join(","))]),
            outputs: Outputs::from([("id".to_string(), tg.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let elb = ctx.aws.elbv2();
        let tg = desired.value("targetGroup")?;
        let wanted = csv(desired.value("instances")?);
        let have = registered(&ctx.aws, tg).await?;
        let target = |id: &String| TargetDescription::builder().id(id).port(API_PORT).build();
        let add: Vec<TargetDescription> = wanted.iter().filter(|w| !have.contains(w)).map(target).collect();
        let remove: Vec<TargetDescription> = have.iter().filter(|h| !wanted.contains(h)).map(target).collect();
        if !add.is_empty() {
            elb.register_targets()
                .target_group_arn(tg)
                .set_targets(Some(add))
                .send()
                .await
                .map_err(aws_err(&self.id, "RegisterTargets"))?;
        }
        if !remove.is_empty() {
            elb.deregister_targets()
                .target_group_arn(tg)
                .set_targets(Some(remove))
                .send()
                .await
                .map_err(aws_err(&self.id, "DeregisterTargets"))?;
        }
        Ok(Step::Done(Outputs::from([("id".to_string(), tg.to_string())])))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        // Registrations go with the target group.
        Ok(Step::Done(()))
    }
}

/// Instance ids registered in a target group, sorted.
async fn registered(aws: &Aws, tg: &str) -> anyhow::Result<Vec<String>> {
    let out = aws
        .elbv2()
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .map_err(aws_err(format!("target-group ({tg})"), "DescribeTargetHealth"))?;
    let mut ids: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// What delete knows about ELBv2 load balancers (see `delete::Kind`): kforge's and those Kubernetes made for the
/// cluster (the service controller, the AWS Load Balancer Controller).
#[derive(Debug)]
pub struct LoadBalancerKind;

#[async_trait]
impl Kind for LoadBalancerKind {
    fn name(&self) -> &'static str {
        "load-balancer"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .load_balancers(&ctx.aws)
            .await?
            .iter()
            .map(|lb| Doomed::new(kind, &lb.arn, lb.tags.get(tags::RESOURCE).cloned(), Some(&lb.detail)))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_load_balancer(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // Kubernetes' service controller would re-create a load balancer while the cluster runs.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
}

/// What delete knows about ELBv2 target groups (see `delete::Kind`).
#[derive(Debug)]
pub struct TargetGroupKind;

#[async_trait]
impl Kind for TargetGroupKind {
    fn name(&self) -> &'static str {
        "target-group"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .target_groups(&ctx.aws)
            .await?
            .iter()
            .map(|tg| Doomed::new(kind, &tg.arn, tg.tags.get(tags::RESOURCE).cloned(), Some(&tg.detail)))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_target_group(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("load-balancer"), Order::Kind("eks-cluster")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elb_names_fit_32_characters_and_stay_distinct() {
        assert_eq!(elb_name("demo", "api"), "kforge-demo-api");
        let a = elb_name("a-very-long-cluster-name-for-the-ml-team", "api");
        let b = elb_name("a-very-long-cluster-name-for-the-ml-team2", "api");
        assert!(a.len() <= 32 && b.len() <= 32, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-api"), "{a}");
        assert!(!a.contains("--"), "{a}");
    }
}
