//! The cluster's instances, key pairs, Auto Scaling groups and launch templates (by tag).

use super::*;

impl Inventory {
    /// Instances of the cluster that exist (pending, running, stopping or stopped): kforge's machines and those
    /// its Auto Scaling groups launched.
    pub async fn instances(&self, aws: &Aws) -> anyhow::Result<&[Instance]> {
        self.instances
            .get_or_try_init(|| async {
                let mut filters = self.filters();
                filters.push(
                    Filter::builder()
                        .name("instance-state-name")
                        .set_values(Some(
                            ["pending", "running", "stopping", "stopped"].map(String::from).to_vec(),
                        ))
                        .build(),
                );
                let mut out = Vec::new();
                let mut pages = aws
                    .ec2()
                    .describe_instances()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("instance"), "DescribeInstances"))?;
                    out.extend(page.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
                }
                Ok::<_, anyhow::Error>(self.own(out))
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn key_pairs(&self, aws: &Aws) -> anyhow::Result<&[KeyPairInfo]> {
        self.key_pairs
            .get_or_try_init(|| async {
                let out = aws
                    .ec2()
                    .describe_key_pairs()
                    .set_filters(Some(self.filters()))
                    .send()
                    .await
                    .map_err(aws_err(self.what("key pair"), "DescribeKeyPairs"))?;
                Ok::<_, anyhow::Error>(self.own(out.key_pairs().to_vec()))
            })
            .await
            .map(Vec::as_slice)
    }

    /// Auto Scaling groups tagged with the cluster (including those being deleted).
    pub async fn auto_scaling_groups(&self, aws: &Aws) -> anyhow::Result<&[AutoScalingGroup]> {
        self.auto_scaling_groups
            .get_or_try_init(|| async {
                let filter = aws_sdk_autoscaling::types::Filter::builder()
                    .name(format!("tag:{}", tags::CLUSTER))
                    .values(&self.cluster)
                    .build();
                let mut out = Vec::new();
                let mut pages = aws
                    .autoscaling()
                    .describe_auto_scaling_groups()
                    .filters(filter)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("Auto Scaling group"), "DescribeAutoScalingGroups"))?;
                    // Kept only if tagged so: the filter is the server's to apply, the check is ours.
                    out.extend(
                        page.auto_scaling_groups()
                            .iter()
                            .filter(|g| {
                                g.tags()
                                    .iter()
                                    .any(|t| t.key() == Some(tags::CLUSTER) && t.value() == Some(self.cluster.as_str()))
                            })
                            .cloned(),
                    );
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn launch_templates(&self, aws: &Aws) -> anyhow::Result<&[LaunchTemplate]> {
        self.launch_templates
            .get_or_try_init(|| async {
                Ok(self.own(paged!(
                    aws,
                    describe_launch_templates,
                    self.filters(),
                    launch_templates,
                    "DescribeLaunchTemplates",
                    self.what("launch template")
                )))
            })
            .await
            .map(Vec::as_slice)
    }
}
