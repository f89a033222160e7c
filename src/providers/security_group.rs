//! Security groups and their ingress rules. A group and its rules are two resources, as in kops: masters allow
//! nodes and nodes allow masters, so the groups must all exist before any rule can name another one.
//!
//! The rules resource owns the group's whole ingress set: what the spec wants is authorized, anything else (a rule
//! added by hand, a CIDR dropped from the spec) is revoked. Egress stays AWS' default (all outbound).

use crate::aws::inventory::logical_id;
use crate::delete::{Doomed, Kind, Order};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroup, UserIdGroupPair};
use ipnet::Ipv4Net;

use crate::aws::inventory::by_logical_id;
use crate::aws::tags::{ec2_tag_map, ec2_tag_spec, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, error_code, is_not_found};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, Value, resource_metadata,
};
use crate::providers::network::retag;

/// A security group of the cluster (`kforge-CLUSTER-ROLE`) in its VPC.
pub struct SecurityGroupRes {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// The VPC resource first.
    pub deps: Vec<String>,
}

fn outputs(id: &str) -> Outputs {
    Outputs::from([("id".to_string(), id.to_string())])
}

#[async_trait]
impl Resource for SecurityGroupRes {
    resource_metadata!("security-group", Phase::Security);
    fn desired(&self, inputs: &Inputs) -> Desired {
        Desired::default()
            .attr("vpc", inputs.get(&self.deps[0], "id"), Mutability::Immutable)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let groups = ctx.inventory.security_groups(&ctx.aws).await?;
        let found = by_logical_id(
            groups,
            "security group",
            &ctx.cluster,
            &self.id,
            |g| g.tags(),
            |g| g.group_id(),
        )?;
        Ok(found.map(|g| {
            let id = g.group_id().unwrap_or_default();
            Observed {
                id: id.to_string(),
                attrs: BTreeMap::from([
                    ("vpc", g.vpc_id().unwrap_or_default().to_string()),
                    ("tags", render_subset(&ec2_tag_map(g.tags()), &self.tags)),
                ]),
                outputs: outputs(id),
            }
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        if let Some(done) = retag(ctx, change, actual, &self.id, &self.tags).await? {
            return Ok(done);
        }
        let created = ctx
            .aws
            .ec2()
            .create_security_group()
            .group_name(&self.name)
            .description(&self.description)
            .vpc_id(desired.value("vpc")?)
            .tag_specifications(ec2_tag_spec(ResourceType::SecurityGroup, &self.tags))
            .send()
            .await
            .map_err(aws_err(format!("{} ({})", self.id, self.name), "CreateSecurityGroup"))?;
        Ok(Step::Done(outputs(created.group_id().unwrap_or_default())))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_security_group(&ctx.aws, &actual.id).await
    }
}

/// Where traffic may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Cidr(Ipv4Net),
    /// A security group resource of the cluster, by logical id.
    Group(String),
}

/// One ingress rule: `protocol` is `tcp`, `udp` or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub protocol: &'static str,
    pub ports: (i32, i32),
    pub source: Source,
}

impl Rule {
    pub fn tcp(port: i32, source: Source) -> Rule {
        Rule {
            protocol: "tcp",
            ports: (port, port),
            source,
        }
    }
}

/// `tcp 6443 from sg-1`, `udp 8472 from 10.0.0.0/8`, `all from sg-2`: one rule as diffs compare it.
fn render_rule(protocol: &str, from: Option<i32>, to: Option<i32>, source: &str) -> String {
    match (protocol, from, to) {
        ("-1" | "all", _, _) => format!("all from {source}"),
        (p, Some(a), Some(b)) if a == b => format!("{p} {a} from {source}"),
        (p, Some(a), Some(b)) => format!("{p} {a}-{b} from {source}"),
        (p, _, _) => format!("{p} from {source}"),
    }
}

/// Each (rendered rule, single-source permission) of a group as it is.
fn actual_rules(group: &SecurityGroup) -> Vec<(String, IpPermission)> {
    let mut out = Vec::new();
    for p in group.ip_permissions() {
        let protocol = p.ip_protocol().unwrap_or("-1");
        let base = || {
            IpPermission::builder()
                .ip_protocol(protocol)
                .set_from_port(p.from_port())
                .set_to_port(p.to_port())
        };
        for r in p.ip_ranges() {
            let cidr = r.cidr_ip().unwrap_or_default();
            out.push((
                render_rule(protocol, p.from_port(), p.to_port(), cidr),
                base().ip_ranges(IpRange::builder().cidr_ip(cidr).build()).build(),
            ));
        }
        for g in p.user_id_group_pairs() {
            let id = g.group_id().unwrap_or_default();
            out.push((
                render_rule(protocol, p.from_port(), p.to_port(), id),
                base()
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id(id).build())
                    .build(),
            ));
        }
    }
    out
}

/// The whole ingress rule set of one security group.
pub struct SecurityGroupRules {
    pub id: String,
    /// The group's resource id.
    pub group: String,
    pub rules: Vec<Rule>,
    pub deps: Vec<String>,
}

impl SecurityGroupRules {
    /// The rendered rules with group sources resolved; `None` while a source group is yet to be created.
    fn wanted(&self, inputs: &Inputs) -> Option<BTreeSet<String>> {
        self.rules
            .iter()
            .map(|r| {
                let source = match &r.source {
                    Source::Cidr(net) => net.to_string(),
                    Source::Group(g) => inputs.get(g, "id").known()?.to_string(),
                };
                Some(render_rule(r.protocol, Some(r.ports.0), Some(r.ports.1), &source))
            })
            .collect()
    }
}

/// The permission a rendered rule stands for (the inverse of [`render_rule`]).
fn permission(rule: &str, description: &str) -> anyhow::Result<IpPermission> {
    let bad = || anyhow::anyhow!("internal: unparseable rule `{rule}`");
    let (head, source) = rule.split_once(" from ").ok_or_else(bad)?;
    let mut p = match head.split_once(' ') {
        None if head == "all" => IpPermission::builder().ip_protocol("-1"),
        Some((proto, ports)) => {
            let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
            IpPermission::builder()
                .ip_protocol(proto)
                .from_port(a.parse().map_err(|_| bad())?)
                .to_port(b.parse().map_err(|_| bad())?)
        }
        None => return Err(bad()),
    };
    p = if source.starts_with("sg-") {
        p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(source)
                .description(description)
                .build(),
        )
    } else {
        p.ip_ranges(IpRange::builder().cidr_ip(source).description(description).build())
    };
    Ok(p.build())
}

fn join(rules: impl IntoIterator<Item = String>) -> String {
    let set: BTreeSet<String> = rules.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join("; ")
}

#[async_trait]
impl Resource for SecurityGroupRules {
    resource_metadata!("security-group-rules", Phase::Security);
    fn desired(&self, inputs: &Inputs) -> Desired {
        let ingress = match self.wanted(inputs) {
            Some(w) => Value::Known(join(w)),
            None => Value::Unknown,
        };
        Desired::default()
            .attr("group", inputs.get(&self.group, "id"), Mutability::Replace)
            .attr("ingress", ingress, Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let groups = ctx.inventory.security_groups(&ctx.aws).await?;
        let Some(g) = by_logical_id(
            groups,
            "security group",
            &ctx.cluster,
            &self.group,
            |g| g.tags(),
            |g| g.group_id(),
        )?
        else {
            return Ok(None);
        };
        let id = g.group_id().unwrap_or_default();
        Ok(Some(Observed {
            id: id.to_string(),
            attrs: BTreeMap::from([
                ("group", id.to_string()),
                ("ingress", join(actual_rules(g).into_iter().map(|(r, _)| r))),
            ]),
            outputs: outputs(id),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        _: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let ec2 = ctx.aws.ec2();
        let group_id = desired.value("group")?;
        let what = format!("{} ({group_id})", self.id);
        let description = format!("kforge {}", self.id);
        let wanted: BTreeMap<String, IpPermission> = desired
            .value("ingress")?
            .split("; ")
            .filter(|r| !r.is_empty())
            .map(|r| Ok((r.to_string(), permission(r, &description)?)))
            .collect::<anyhow::Result<_>>()?;
        let described = ec2
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(aws_err(&what, "DescribeSecurityGroups"))?;
        let have: BTreeMap<String, IpPermission> = described
            .security_groups()
            .first()
            .map(actual_rules)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let revoke: Vec<IpPermission> = have
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k))
            .map(|(_, p)| p.clone())
            .collect();
        let authorize: Vec<IpPermission> = wanted
            .iter()
            .filter(|(k, _)| !have.contains_key(*k))
            .map(|(_, p)| p.clone())
            .collect();
        if !revoke.is_empty() {
            ec2.revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(revoke))
                .send()
                .await
                .map_err(aws_err(&what, "RevokeSecurityGroupIngress"))?;
        }
        if !authorize.is_empty() {
            let r = ec2
                .authorize_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(authorize))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| anyhow::Error::from(aws_err(&what, "AuthorizeSecurityGroupIngress")(e)));
            match r {
                // A rule another run added meanwhile: it is what we want.
                Err(e) if error_code(&e) == Some("InvalidPermission.Duplicate") => {}
                r => r?,
            }
        }
        Ok(Step::Done(outputs(group_id)))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        // The rules go with their group.
        Ok(Step::Done(()))
    }
}

/// Revokes the group's rules that name other groups (AWS refuses to delete a group another group's rule names;
/// masters and nodes name each other), then deletes it. Safe to call again.
pub async fn delete_security_group(aws: &Aws, id: &str) -> anyhow::Result<Step<()>> {
    let what = format!("security-group ({id})");
    let described = aws.ec2().describe_security_groups().group_ids(id).send().await;
    let group = match described.map_err(|e| anyhow::Error::from(aws_err(&what, "DescribeSecurityGroups")(e))) {
        Ok(out) => out.security_groups().first().cloned(),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(e),
    };
    let Some(group) = group else {
        return Ok(Step::Done(()));
    };
    let referencing: Vec<IpPermission> = actual_rules(&group)
        .into_iter()
        .filter(|(_, p)| !p.user_id_group_pairs().is_empty())
        .map(|(_, p)| p)
        .collect();
    if !referencing.is_empty() {
        let r = aws
            .ec2()
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(referencing))
            .send()
            .await;
        if let Err(e) = r.map_err(|e| anyhow::Error::from(aws_err(&what, "RevokeSecurityGroupIngress")(e)))
            && !is_not_found(&e)
        {
            return Err(e);
        }
    }
    let r = aws
        .ec2()
        .delete_security_group()
        .group_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| anyhow::Error::from(aws_err(&what, "DeleteSecurityGroup")(e)));
    match r {
        Ok(()) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) if class_of(&e) == ErrorClass::InUse => Ok(Step::Blocked {
            reason: format!("security group {id} is still referenced or in use"),
        }),
        Err(e) => Err(e),
    }
}

/// What delete knows about security groups (see `delete::Kind`): kforge's and those Kubernetes tagged `owned`.
#[derive(Debug)]
pub struct SecurityGroupKind;

#[async_trait]
impl Kind for SecurityGroupKind {
    fn name(&self) -> &'static str {
        "security-group"
    }
    fn phase(&self) -> Phase {
        Phase::Security
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .security_groups(&ctx.aws)
            .await?
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .map(|g| Doomed::new(kind, g.group_id().unwrap_or_default(), logical_id(g.tags()), g.vpc_id()))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_security_group(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // Whatever has a network interface in the group.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("load-balancer"),
            Order::Kind("network-interface"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_render_alike_from_spec_and_from_aws() {
        let rules = SecurityGroupRules {
            id: "security-group-rules/masters".into(),
            group: "security-group/masters".into(),
            rules: vec![
                Rule::tcp(6443, Source::Group("security-group/nodes".into())),
                Rule {
                    protocol: "tcp",
                    ports: (2379, 2380),
                    source: Source::Group("security-group/masters".into()),
                },
                Rule::tcp(22, Source::Cidr("203.0.113.0/24".parse().unwrap())),
            ],
            deps: vec![],
        };
        let unknown = Inputs::new(BTreeMap::new());
        assert!(
            rules.wanted(&unknown).is_none(),
            "a group yet to be created leaves the set unknown"
        );
        let inputs = Inputs::new(BTreeMap::from([
            (
                "security-group/nodes".to_string(),
                Some(Outputs::from([("id".into(), "sg-n".into())])),
            ),
            (
                "security-group/masters".to_string(),
                Some(Outputs::from([("id".into(), "sg-m".into())])),
            ),
        ]));
        let wanted = join(rules.wanted(&inputs).unwrap());
        assert_eq!(
            wanted,
            "tcp 22 from 203.0.113.0/24; tcp 2379-2380 from sg-m; tcp 6443 from sg-n"
        );
        for r in wanted.split("; ").chain(["all from sg-n", "udp 8472 from 10.0.0.0/16"]) {
            let p = permission(r, "d").unwrap();
            let g = SecurityGroup::builder().ip_permissions(p).build();
            assert_eq!(actual_rules(&g)[0].0, r, "a rendered rule survives the round trip");
        }
        let group = SecurityGroup::builder()
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(6443)
                    .to_port(6443)
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-n").build())
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .build();
        let have: Vec<String> = actual_rules(&group).into_iter().map(|(r, _)| r).collect();
        assert_eq!(have, ["tcp 6443 from 0.0.0.0/0", "tcp 6443 from sg-n"]);
    }
}
