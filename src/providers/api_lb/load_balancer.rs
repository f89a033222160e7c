//! The API server's network load balancer (and the ELBv2 load balancers delete finds for the cluster).

use super::*;

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

pub(super) fn lb_outputs(arn: &str, dns: &str) -> Outputs {
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
