//! Single instances (masters, the bastion) started from their launch template, and the instances delete finds.

use super::*;

pub(super) const LAUNCH_TEMPLATE: &str = "launchTemplate";

/// One EC2 instance kforge runs itself (a master, the bastion), started from its launch template into a subnet.
pub struct Machine {
    pub id: String,
    pub instance_type: String,
    pub subnet: String,
    pub launch_template: String,
    /// The instance profile's name, passed explicitly as well (emulators drop it from templates).
    pub instance_profile: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

pub(super) fn instance_outputs(i: &aws_sdk_ec2::types::Instance) -> Outputs {
    let mut out = Outputs::from([("id".to_string(), i.instance_id().unwrap_or_default().to_string())]);
    if let Some(ip) = i.private_ip_address() {
        out.insert("privateIp".into(), ip.to_string());
    }
    out
}

#[async_trait]
impl Resource for Machine {
    resource_metadata!("instance", Phase::Cluster);
    fn deadline(&self) -> Duration {
        Duration::from_secs(600)
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        // A master holds an etcd member on its disk: kforge never replaces one behind the user's back.
        Desired::default()
            .attr("instanceType", self.instance_type.as_str(), Mutability::Immutable)
            .attr("subnet", inputs.get(&self.subnet, "id"), Mutability::Immutable)
            .attr("tags", render(&self.tags), Mutability::InPlace)
            .attr(
                LAUNCH_TEMPLATE,
                inputs.get(&self.launch_template, "id"),
                Mutability::InPlace,
            )
    }
    fn diff(&self, actual: Option<&Observed>, desired: &Desired) -> Result<Change, Box<ImmutableChange>> {
        // The template only matters at launch: a new version does not touch running machines.
        let mut compared = desired.clone();
        compared.attrs.retain(|a| a.name != LAUNCH_TEMPLATE);
        diff_attrs(&self.id, self.kind(), actual, &compared)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let instances = ctx.inventory.instances(&ctx.aws).await?;
        let found = by_logical_id(
            instances,
            "instance",
            &ctx.cluster,
            &self.id,
            |i| i.tags(),
            |i| i.instance_id(),
        )?;
        Ok(found.map(|i| Observed {
            id: i.instance_id().unwrap_or_default().to_string(),
            attrs: BTreeMap::from([
                (
                    "instanceType",
                    i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                ),
                ("subnet", i.subnet_id().unwrap_or_default().to_string()),
                ("tags", render_subset(&ec2_tag_map(i.tags()), &self.tags)),
            ]),
            outputs: instance_outputs(i),
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
        let ec2 = ctx.aws.ec2();
        let template_id = desired.value(LAUNCH_TEMPLATE)?;
        let mut run = ec2
            .run_instances()
            .client_token(ctx.client_token(&self.id, desired))
            .min_count(1)
            .max_count(1)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(template_id)
                    .version("$Default")
                    .build(),
            )
            .subnet_id(desired.value("subnet")?)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .tag_specifications(ec2_tag_spec(ResourceType::Instance, &self.tags))
            .tag_specifications(ec2_tag_spec(ResourceType::Volume, &self.tags));
        if let Some(profile) = &self.instance_profile {
            run = run.iam_instance_profile(IamInstanceProfileSpecification::builder().name(profile).build());
        }
        let r = run.send().await;
        let out = match r.map_err(|e| anyhow::Error::from(aws_err(&self.id, "RunInstances")(e))) {
            Ok(out) => out,
            // IAM is eventually consistent: a profile made seconds ago is not yet known to EC2.
            Err(e)
                if error_code(&e) == Some("InvalidParameterValue")
                    && e.to_string().to_lowercase().contains("instance profile") =>
            {
                return Ok(Step::Retry {
                    after: Duration::from_secs(5),
                    reason: "the new instance profile is not visible to EC2 yet".into(),
                });
            }
            Err(e) => return Err(e),
        };
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| anyhow::anyhow!("{}: RunInstances returned no instance", self.id))?;
        Ok(Step::Done(instance_outputs(instance)))
    }
    async fn ready(&self, ctx: &Ctx, outputs: &Outputs) -> anyhow::Result<Step<()>> {
        let id = outputs.get("id").map(String::as_str).unwrap_or_default();
        let state = instance_state(&ctx.aws, id).await?;
        match state {
            Some(InstanceStateName::Running) => Ok(Step::Done(())),
            Some(InstanceStateName::Pending) | None => Ok(Step::Retry {
                after: Duration::from_secs(5),
                reason: "starting".into(),
            }),
            Some(other) => anyhow::bail!(
                "{} ({id}) is {} instead of running\n  hint: see the instance's state reason in the EC2 console, then re-run",
                self.id,
                other.as_str()
            ),
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        terminate_instance(&ctx.aws, &actual.id).await
    }
}

pub(super) async fn instance_state(aws: &Aws, id: &str) -> anyhow::Result<Option<InstanceStateName>> {
    let r = aws.ec2().describe_instances().instance_ids(id).send().await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("instance ({id})"), "DescribeInstances")(e))) {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .cloned()),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Terminates the instance and waits until it is gone. Safe to call again.
pub async fn terminate_instance(aws: &Aws, id: &str) -> anyhow::Result<Step<()>> {
    match instance_state(aws, id).await? {
        None | Some(InstanceStateName::Terminated) => Ok(Step::Done(())),
        Some(InstanceStateName::ShuttingDown) => Ok(Step::Retry {
            after: Duration::from_secs(5),
            reason: "shutting down".into(),
        }),
        Some(_) => {
            aws.ec2()
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(aws_err(format!("instance ({id})"), "TerminateInstances"))?;
            Ok(Step::Retry {
                after: Duration::from_secs(2),
                reason: "termination requested".into(),
            })
        }
    }
}

/// What delete knows about single instances (see `delete::Kind`); an Auto Scaling group's go with their group
/// (deleting them alone would only get them replaced).
#[derive(Debug)]
pub struct InstanceKind;

#[async_trait]
impl Kind for InstanceKind {
    fn name(&self) -> &'static str {
        "instance"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .instances(&ctx.aws)
            .await?
            .iter()
            .filter(|i| !i.tags().iter().any(|t| t.key() == Some("aws:autoscaling:groupName")))
            .map(|i| {
                Doomed::new(
                    kind,
                    i.instance_id().unwrap_or_default(),
                    logical_id(i.tags()),
                    i.vpc_id(),
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        terminate_instance(&ctx.aws, &item.cloud_id).await
    }
}
