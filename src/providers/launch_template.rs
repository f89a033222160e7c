//! EC2 launch templates: how kforge makes every node it starts secure by default (IMDSv2 required, encrypted
//! root volume) whatever starts the instance (an EKS managed nodegroup, an Auto Scaling group).
//!
//! A change of the instance settings is a new template *version* made the default, so what runs keeps running and
//! the owner (nodegroup, ASG) rolls onto the new version; the `version` output tells it which one.

use crate::aws::inventory::logical_id;
use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    InstanceType, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, ResponseLaunchTemplateData,
    VolumeType,
};

use crate::aws::inventory::by_logical_id;
use crate::aws::tags::{ec2_tag_map, ec2_tag_spec, ec2_tags, render, render_subset};
use crate::aws::{aws_err, is_not_found};
use crate::engine::{Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, Value};
use crate::model::Volume;

/// Hops allowed for IMDS answers: 2 lets pods (one network hop further) reach the node's credentials endpoint,
/// as the AWS VPC CNI and EBS CSI driver need.
const IMDS_HOP_LIMIT: i32 = 2;

pub struct LaunchTemplate {
    pub id: String,
    pub phase: Phase,
    /// Launch template names are unique per region: `kforge-CLUSTER-GROUP`.
    pub name: String,
    /// Root device of the AMI family (`/dev/xvda` on Amazon Linux).
    pub root_device: String,
    pub volume: Volume,
    pub tags: BTreeMap<String, String>,
    /// What the instances are: set for kforge's own machines (provider ec2); `None` when the owner (an EKS managed
    /// nodegroup) picks image, type and network itself.
    pub machine: Option<MachineSettings>,
    pub deps: Vec<String>,
}

/// The instance settings of a launch template for kforge's own machines. Dependencies are named by logical id and
/// read from their outputs.
#[derive(Debug, Clone)]
pub struct MachineSettings {
    /// Resource with outputs `id` (the AMI) and `rootDevice`.
    pub image: String,
    /// `None` for mixed-instances groups, whose types are the Auto Scaling group's overrides.
    pub instance_type: Option<String>,
    /// Resource with output `name` (the key pair).
    pub key_pair: String,
    /// Resource with output `arn` (the instance profile), if the machines get one.
    pub instance_profile: Option<String>,
    /// Resources with output `id` (security groups).
    pub security_groups: Vec<String>,
    /// cloud-init user data, in clear; never secret.
    pub user_data: String,
    /// Tags of the instances and volumes launched from the template.
    pub instance_tags: BTreeMap<String, String>,
}

/// A short stable digest of user data, for diffs (the text itself can be long).
fn user_data_digest(text: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(text.as_bytes());
    format!(
        "sha256:{}",
        d.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn render_volume(
    size: Option<i32>,
    kind: Option<&str>,
    encrypted: Option<bool>,
    iops: Option<i32>,
    thr: Option<i32>,
) -> String {
    let mut s = format!(
        "{} {}GiB encrypted={}",
        kind.unwrap_or("?"),
        size.unwrap_or(0),
        encrypted.unwrap_or(false)
    );
    if let Some(i) = iops {
        s.push_str(&format!(" iops={i}"));
    }
    if let Some(t) = thr {
        s.push_str(&format!(" throughput={t}"));
    }
    s
}

fn render_imds(tokens: Option<&str>, hops: Option<i32>) -> String {
    format!("tokens={} hops={}", tokens.unwrap_or("optional"), hops.unwrap_or(1))
}

impl LaunchTemplate {
    fn data(&self, desired: &Desired) -> anyhow::Result<RequestLaunchTemplateData> {
        let v = &self.volume;
        let ebs = LaunchTemplateEbsBlockDeviceRequest::builder()
            .volume_size(crate::model::aws_i32(v.size_gib))
            .volume_type(VolumeType::from(v.kind.as_str()))
            .encrypted(v.encrypted)
            .delete_on_termination(true)
            .set_iops(v.iops.map(crate::model::aws_i32))
            .set_throughput(v.throughput.map(crate::model::aws_i32))
            .build();
        let instance_tags = self.machine.as_ref().map_or(&self.tags, |m| &m.instance_tags);
        let tag_specs = [ResourceType::Instance, ResourceType::Volume]
            .into_iter()
            .map(|rt| {
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(rt)
                    .set_tags(Some(ec2_tags(instance_tags)))
                    .build()
            })
            .collect();
        let root_device = match &self.machine {
            Some(_) => desired.value("rootDevice")?,
            None => &self.root_device,
        };
        let mut data = RequestLaunchTemplateData::builder()
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(root_device)
                    .ebs(ebs)
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(IMDS_HOP_LIMIT)
                    .build(),
            )
            .set_tag_specifications(Some(tag_specs));
        if let Some(m) = &self.machine {
            use base64::Engine as _;
            data = data
                .image_id(desired.value("image")?)
                .set_instance_type(m.instance_type.as_deref().map(InstanceType::from))
                .key_name(desired.value("keyName")?)
                .set_security_group_ids(Some(
                    desired
                        .value("securityGroups")?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                ))
                .user_data(base64::engine::general_purpose::STANDARD.encode(&m.user_data));
            if m.instance_profile.is_some() {
                data = data.iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .arn(desired.value("instanceProfile")?)
                        .build(),
                );
            }
        }
        Ok(data.build())
    }

    /// The machine attributes of a template version as found.
    fn observed_machine(data: Option<&ResponseLaunchTemplateData>) -> Vec<(&'static str, String)> {
        use base64::Engine as _;
        let mut groups: Vec<&str> = data
            .map(|d| d.security_group_ids().iter().map(String::as_str).collect())
            .unwrap_or_default();
        groups.sort();
        let user_data = data
            .and_then(|d| d.user_data())
            .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u).ok())
            .map(|b| user_data_digest(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        vec![
            ("image", data.and_then(|d| d.image_id()).unwrap_or_default().to_string()),
            (
                "rootDevice",
                data.and_then(|d| d.block_device_mappings().first())
                    .and_then(|m| m.device_name())
                    .unwrap_or_default()
                    .to_string(),
            ),
            (
                "instanceType",
                data.and_then(|d| d.instance_type())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_else(|| "(per group)".into()),
            ),
            (
                "keyName",
                data.and_then(|d| d.key_name()).unwrap_or_default().to_string(),
            ),
            (
                "instanceProfile",
                data.and_then(|d| d.iam_instance_profile())
                    .and_then(|p| p.arn())
                    .unwrap_or("(none)")
                    .to_string(),
            ),
            ("securityGroups", groups.join(",")),
            ("userData", user_data),
        ]
    }

    fn observed_attrs(data: Option<&ResponseLaunchTemplateData>) -> (String, String) {
        let ebs = data
            .and_then(|d| d.block_device_mappings().first())
            .and_then(|m| m.ebs());
        let volume = render_volume(
            ebs.and_then(|e| e.volume_size()),
            ebs.and_then(|e| e.volume_type()).map(|t| t.as_str()),
            ebs.and_then(|e| e.encrypted()),
            ebs.and_then(|e| e.iops()),
            ebs.and_then(|e| e.throughput()),
        );
        let md = data.and_then(|d| d.metadata_options());
        let imds = render_imds(
            md.and_then(|m| m.http_tokens()).map(|t| t.as_str()),
            md.and_then(|m| m.http_put_response_hop_limit()),
        );
        (volume, imds)
    }
}

fn outputs(id: &str, name: &str, version: i64) -> Outputs {
    Outputs::from([
        ("id".to_string(), id.to_string()),
        ("name".to_string(), name.to_string()),
        ("version".to_string(), version.to_string()),
    ])
}

#[async_trait]
impl Resource for LaunchTemplate {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "launch-template"
    }
    fn phase(&self) -> Phase {
        self.phase
    }
    fn depends_on(&self) -> &[String] {
        &self.deps
    }
    fn planned_outputs(&self, actual: &Observed, change: &Change) -> Outputs {
        let mut out = actual.outputs.clone();
        if matches!(change, Change::Update(cs) if cs.iter().any(|c| c.name != "tags")) {
            // A new version is made; its number is known once it exists.
            out.remove("version");
        }
        out
    }
    fn desired(&self, inputs: &Inputs) -> Desired {
        let v = &self.volume;
        let mut d = Desired::default();
        if let Some(m) = &self.machine {
            d = d
                .attr("image", inputs.get(&m.image, "id"), Mutability::InPlace)
                .attr("rootDevice", inputs.get(&m.image, "rootDevice"), Mutability::InPlace)
                .attr(
                    "instanceType",
                    m.instance_type.clone().unwrap_or_else(|| "(per group)".into()),
                    Mutability::InPlace,
                )
                .attr("keyName", inputs.get(&m.key_pair, "name"), Mutability::InPlace)
                .attr(
                    "instanceProfile",
                    m.instance_profile
                        .as_ref()
                        .map_or(Value::Known("(none)".into()), |p| inputs.get(p, "arn")),
                    Mutability::InPlace,
                )
                .attr(
                    "securityGroups",
                    inputs.joined_ids(&m.security_groups),
                    Mutability::InPlace,
                )
                .attr("userData", user_data_digest(&m.user_data), Mutability::InPlace);
        }
        d.attr(
            "volume",
            render_volume(
                Some(crate::model::aws_i32(v.size_gib)),
                Some(&v.kind),
                Some(v.encrypted),
                v.iops.map(crate::model::aws_i32),
                v.throughput.map(crate::model::aws_i32),
            ),
            Mutability::InPlace,
        )
        .attr(
            "imds",
            render_imds(Some("required"), Some(IMDS_HOP_LIMIT)),
            Mutability::InPlace,
        )
        .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.launch_templates(&ctx.aws).await?;
        let Some(lt) = by_logical_id(
            all,
            "launch template",
            &ctx.cluster,
            &self.id,
            |t| t.tags(),
            |t| t.launch_template_id(),
        )?
        else {
            return Ok(None);
        };
        let lt_id = lt.launch_template_id().unwrap_or_default();
        let latest = lt.latest_version_number().unwrap_or(1);
        let versions = ctx
            .aws
            .ec2()
            .describe_launch_template_versions()
            .launch_template_id(lt_id)
            .versions(latest.to_string())
            .send()
            .await
            .map_err(aws_err(
                format!("{} ({lt_id})", self.id),
                "DescribeLaunchTemplateVersions",
            ))?;
        let data = versions
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data());
        let (volume, imds) = Self::observed_attrs(data);
        let mut attrs = BTreeMap::from([
            ("volume", volume),
            ("imds", imds),
            ("tags", render_subset(&ec2_tag_map(lt.tags()), &self.tags)),
        ]);
        if self.machine.is_some() {
            attrs.extend(Self::observed_machine(data));
        }
        Ok(Some(Observed {
            id: lt_id.to_string(),
            attrs,
            outputs: outputs(lt_id, lt.launch_template_name().unwrap_or(&self.name), latest),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let ec2 = ctx.aws.ec2();
        let Some(actual) = actual else {
            let created = ec2
                .create_launch_template()
                .client_token(ctx.client_token(&self.id, desired))
                .launch_template_name(&self.name)
                .version_description("kforge")
                .launch_template_data(self.data(desired)?)
                .tag_specifications(ec2_tag_spec(ResourceType::LaunchTemplate, &self.tags))
                .send()
                .await
                .map_err(aws_err(format!("{} ({})", self.id, self.name), "CreateLaunchTemplate"))?;
            let lt = created
                .launch_template()
                .ok_or_else(|| anyhow::anyhow!("{}: CreateLaunchTemplate returned no template", self.id))?;
            return Ok(Step::Done(outputs(
                lt.launch_template_id().unwrap_or_default(),
                &self.name,
                lt.latest_version_number().unwrap_or(1),
            )));
        };
        let what = format!("{} ({})", self.id, actual.id);
        let mut out = actual.outputs.clone();
        let Change::Update(changes) = change else {
            return Ok(Step::Done(out));
        };
        if changes.iter().any(|c| c.name != "tags") {
            let v = ec2
                .create_launch_template_version()
                .client_token(ctx.client_token(&self.id, desired))
                .launch_template_id(&actual.id)
                .version_description("kforge")
                .launch_template_data(self.data(desired)?)
                .send()
                .await
                .map_err(aws_err(&what, "CreateLaunchTemplateVersion"))?;
            let number = v
                .launch_template_version()
                .and_then(|v| v.version_number())
                .ok_or_else(|| anyhow::anyhow!("{what}: CreateLaunchTemplateVersion returned no version"))?;
            ec2.modify_launch_template()
                .launch_template_id(&actual.id)
                .default_version(number.to_string())
                .send()
                .await
                .map_err(aws_err(&what, "ModifyLaunchTemplate"))?;
            out.insert("version".into(), number.to_string());
        }
        if changes.iter().any(|c| c.name == "tags") {
            ec2.create_tags()
                .resources(&actual.id)
                .set_tags(Some(ec2_tags(&self.tags)))
                .send()
                .await
                .map_err(aws_err(&what, "CreateTags"))?;
        }
        Ok(Step::Done(out))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_launch_template(ctx, &actual.id).await
    }
}

pub async fn delete_launch_template(ctx: &Ctx, id: &str) -> anyhow::Result<Step<()>> {
    let r = ctx
        .aws
        .ec2()
        .delete_launch_template()
        .launch_template_id(id)
        .send()
        .await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("launch-template ({id})"), "DeleteLaunchTemplate")(e))) {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) => Err(e),
    }
}

/// What delete knows about launch templates (see `delete::Kind`).
#[derive(Debug)]
pub struct LaunchTemplateKind;

#[async_trait]
impl Kind for LaunchTemplateKind {
    fn name(&self) -> &'static str {
        "launch-template"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .launch_templates(&ctx.aws)
            .await?
            .iter()
            .map(|t| {
                Doomed::new(
                    kind,
                    t.launch_template_id().unwrap_or_default(),
                    logical_id(t.tags()),
                    None,
                )
            })
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_launch_template(ctx, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        // Nodegroups and Auto Scaling groups launch from the templates until they are gone.
        &[
            Order::Kind("eks-nodegroup"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
}
