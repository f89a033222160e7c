//! What kforge's own EC2 machines are made of: the imported SSH key pair, the IAM instance profiles, the machine
//! image (resolved from a public SSM parameter) and single instances (masters, bastion) started from a launch
//! template. Worker groups are Auto Scaling groups (`asg`).

use crate::aws::inventory::logical_id;
use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceStateName, LaunchTemplateSpecification, ResourceType,
};
use base64::Engine as _;
use sha2::Digest as _;

use crate::aws::inventory::{by_logical_id, role_path};
use crate::aws::tags::{ec2_tag_map, ec2_tag_spec, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, error_code, is_not_found};
use crate::engine::{
    Change, Ctx, Desired, ImmutableChange, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, diff_attrs,
    resource_metadata,
};
use crate::model::MachineImage;
use crate::providers::iam::iam_tags;
use crate::providers::network::retag;

/// Tag on the key pair: a digest of the public key it was imported from, since AWS' own fingerprint of an
/// imported key differs by key type.
pub const PUBLIC_KEY_TAG: &str = "kforge.dev/public-key-sha256";

/// `SHA256:...` of an OpenSSH public key line's key blob, as `ssh-keygen -l` prints it.
pub fn public_key_fingerprint(line: &str) -> Option<String> {
    let blob = line.split_whitespace().nth(1)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(blob).ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

// ---------------------------------------------------------------- key pair

pub struct KeyPair {
    pub id: String,
    /// `kforge-CLUSTER`.
    pub name: String,
    pub public_key: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

impl KeyPair {
    fn digest(&self) -> String {
        public_key_fingerprint(&self.public_key).unwrap_or_else(|| "(unreadable)".into())
    }
}

fn key_outputs(id: &str, name: &str) -> Outputs {
    Outputs::from([
        ("id".to_string(), id.to_string()),
        ("name".to_string(), name.to_string()),
    ])
}

#[async_trait]
impl Resource for KeyPair {
    resource_metadata!("key-pair", Phase::Security);
    fn desired(&self, _: &Inputs) -> Desired {
        // A new key is a new key pair of the same name: machines started later get it, running ones keep theirs.
        Desired::default()
            .attr("publicKey", self.digest(), Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let pairs = ctx.inventory.key_pairs(&ctx.aws).await?;
        let found = by_logical_id(
            pairs,
            "key pair",
            &ctx.cluster,
            &self.id,
            |k| k.tags(),
            |k| k.key_pair_id(),
        )?;
        Ok(found.map(|k| {
            let tags = ec2_tag_map(k.tags());
            Observed {
                id: k.key_pair_id().unwrap_or_default().to_string(),
                attrs: BTreeMap::from([
                    ("publicKey", tags.get(PUBLIC_KEY_TAG).cloned().unwrap_or_default()),
                    ("tags", render_subset(&tags, &self.tags)),
                ]),
                outputs: key_outputs(k.key_pair_id().unwrap_or_default(), k.key_name().unwrap_or(&self.name)),
            }
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        change: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let mut tags = self.tags.clone();
        tags.insert(PUBLIC_KEY_TAG.into(), self.digest());
        if let Some(done) = retag(ctx, change, actual, &self.id, &tags).await? {
            return Ok(done);
        }
        let imported = ctx
            .aws
            .ec2()
            .import_key_pair()
            .key_name(&self.name)
            .public_key_material(Blob::new(self.public_key.as_bytes()))
            .tag_specifications(ec2_tag_spec(ResourceType::KeyPair, &tags))
            .send()
            .await
            .map_err(aws_err(format!("{} ({})", self.id, self.name), "ImportKeyPair"))?;
        Ok(Step::Done(key_outputs(
            imported.key_pair_id().unwrap_or_default(),
            imported.key_name().unwrap_or(&self.name),
        )))
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_key_pair(&ctx.aws, actual.outputs.get("name").unwrap_or(&self.name)).await
    }
}

/// Deletes a key pair by name (unique per region; every endpoint takes the name). Safe to call again.
pub async fn delete_key_pair(aws: &Aws, name: &str) -> anyhow::Result<Step<()>> {
    let r = aws.ec2().delete_key_pair().key_name(name).send().await;
    match r.map_err(|e| anyhow::Error::from(aws_err(format!("key-pair ({name})"), "DeleteKeyPair")(e))) {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if is_not_found(&e) => Ok(Step::Done(())),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- instance profile

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

fn profile_outputs(p: &aws_sdk_iam::types::InstanceProfile) -> Outputs {
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

/// CPU architecture of an instance type: Graviton families (`m7g`, `c6gn`, `t4g`) are arm64.
pub fn architecture(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or_default();
    let generation_suffix = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let suffix = generation_suffix.trim_start_matches(|c: char| c.is_ascii_digit());
    if suffix.starts_with('g') { "arm64" } else { "x86_64" }
}

/// The public SSM parameter naming the newest AMI of an image family for an architecture.
pub fn ssm_parameter(image: &MachineImage, arch: &str) -> Option<String> {
    match image {
        MachineImage::Al2023 => Some(format!(
            "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
        )),
        MachineImage::Ubuntu => Some(format!(
            "/aws/service/canonical/ubuntu/server/24.04/stable/current/{}/hvm/ebs-gp3/ami-id",
            if arch == "x86_64" { "amd64" } else { "arm64" }
        )),
        MachineImage::Id(_) => None,
    }
}

/// The AMI of the cluster's machines of one architecture: looked up, never created (a data source).
pub struct MachineImageRes {
    pub id: String,
    pub image: MachineImage,
    pub arch: &'static str,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for MachineImageRes {
    resource_metadata!("machine-image", Phase::Cluster);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let ami = match ssm_parameter(&self.image, self.arch) {
            Some(param) => {
                let r = ctx.aws.ssm().get_parameter().name(&param).send().await;
                match r {
                    Ok(out) => out.parameter().and_then(|p| p.value()).unwrap_or_default().to_string(),
                    Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => anyhow::bail!(
                        "spec.image: region {} has no public parameter {param}\n  hint: set spec.image to an AMI id of the region",
                        ctx.aws.region()
                    ),
                    Err(e) => return Err(aws_err(format!("spec.image ({param})"), "GetParameter")(e).into()),
                }
            }
            None => self.image.as_spec(),
        };
        let r = ctx.aws.ec2().describe_images().image_ids(&ami).send().await;
        let image = match r.map_err(|e| anyhow::Error::from(aws_err(format!("image {ami}"), "DescribeImages")(e))) {
            Ok(out) => out.images().first().cloned(),
            Err(e) if error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => None,
            Err(e) => return Err(e),
        };
        let root_device = match (&image, &self.image) {
            (Some(i), _) => i.root_device_name().unwrap_or("/dev/xvda").to_string(),
            (None, MachineImage::Id(id)) => anyhow::bail!(
                "spec.image: AMI {id} does not exist in region {} (or is not shared with this account)\n  hint: AMI ids differ per region; use one of this region, or al2023/ubuntu",
                ctx.aws.region()
            ),
            // The parameter is AWS' word; an endpoint may not list the image itself.
            (None, MachineImage::Ubuntu) => "/dev/sda1".into(),
            (None, MachineImage::Al2023) => "/dev/xvda".into(),
        };
        Ok(Some(Observed {
            id: ami.clone(),
            attrs: BTreeMap::new(),
            outputs: Outputs::from([("id".to_string(), ami), ("rootDevice".to_string(), root_device)]),
        }))
    }
    async fn apply(&self, _: &Ctx, _: &Change, _: Option<&Observed>, _: &Desired) -> anyhow::Result<Step<Outputs>> {
        anyhow::bail!("{}: a machine image is looked up, not created", self.id)
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}

// ---------------------------------------------------------------- instance

const LAUNCH_TEMPLATE: &str = "launchTemplate";

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

fn instance_outputs(i: &aws_sdk_ec2::types::Instance) -> Outputs {
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

async fn instance_state(aws: &Aws, id: &str) -> anyhow::Result<Option<InstanceStateName>> {
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

/// What delete knows about key pairs (see `delete::Kind`).
#[derive(Debug)]
pub struct KeyPairKind;

#[async_trait]
impl Kind for KeyPairKind {
    fn name(&self) -> &'static str {
        "key-pair"
    }
    fn phase(&self) -> Phase {
        Phase::Security
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .key_pairs(&ctx.aws)
            .await?
            .iter()
            .map(|k| Doomed::new(kind, k.key_name().unwrap_or_default(), logical_id(k.tags()), None))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_key_pair(&ctx.aws, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("auto-scaling-group"), Order::Kind("instance")]
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_types_are_arm64() {
        for t in ["m7g.large", "c6gn.xlarge", "t4g.micro", "r8g.2xlarge", "m6gd.large"] {
            assert_eq!(architecture(t), "arm64", "{t}");
        }
        for t in [
            "m6i.large",
            "t3.medium",
            "m6a.xlarge",
            "g5.xlarge",
            "p4d.24xlarge",
            "c5n.large",
        ] {
            assert_eq!(architecture(t), "x86_64", "{t}");
        }
    }

    #[test]
    fn public_key_fingerprint_is_ssh_keygens() {
        // What `ssh-keygen -lf` printed for this key.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJswL9+pWYYKkJOoLc8TQCUFrRB5QZ56YGZP2XoOtsvm kforge-test";
        assert_eq!(
            public_key_fingerprint(line).unwrap(),
            "SHA256:QVSYP1nZPKQJHvsAQoPXmL4+TRPArXrch6Ff4dt29x0"
        );
        assert!(public_key_fingerprint("ssh-ed25519 not-base64!").is_none());
    }
}
