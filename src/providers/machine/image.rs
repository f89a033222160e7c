//! The machine image: the newest AMI from the image's public SSM parameter, or an AMI id as given.

use super::*;

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
