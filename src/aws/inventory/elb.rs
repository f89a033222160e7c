//! The cluster's ELBv2 load balancers and target groups: kforge's and those Kubernetes made for it (by tag).

use super::*;

impl Inventory {
    /// Whether ELBv2 tags say a load balancer or target group belongs to the cluster: kforge's own, and those
    /// Kubernetes made for it (the in-tree service controller and the AWS Load Balancer Controller).
    fn elb_is_ours(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(tags::CLUSTER) == Some(&self.cluster)
            || tags.contains_key(&tags::kubernetes_cluster_key(&self.cluster))
            || tags.get("elbv2.k8s.aws/cluster") == Some(&self.cluster)
    }

    async fn elb_tags(&self, aws: &Aws, arns: Vec<(String, String)>) -> anyhow::Result<Vec<Tagged>> {
        let mut out = Vec::new();
        // DescribeTags takes at most 20 ARNs.
        for chunk in arns.chunks(20) {
            let tagged = aws
                .elbv2()
                .describe_tags()
                .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
                .send()
                .await
                .map_err(aws_err(self.what("load balancer"), "DescribeTags"))?;
            for d in tagged.tag_descriptions() {
                let tags: BTreeMap<String, String> = d
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect();
                let arn = d.resource_arn().unwrap_or_default();
                if self.elb_is_ours(&tags) {
                    let detail = chunk
                        .iter()
                        .find(|(a, _)| a == arn)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    out.push(Tagged {
                        arn: arn.to_string(),
                        detail,
                        tags,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn load_balancers(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.load_balancers
            .get_or_try_init(|| async {
                let mut arns = Vec::new();
                let mut pages = aws.elbv2().describe_load_balancers().into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("load balancer"), "DescribeLoadBalancers"))?;
                    arns.extend(page.load_balancers().iter().filter_map(|lb| {
                        Some((
                            lb.load_balancer_arn()?.to_string(),
                            lb.vpc_id().unwrap_or_default().to_string(),
                        ))
                    }));
                }
                self.elb_tags(aws, arns).await
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn target_groups(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.target_groups
            .get_or_try_init(|| async {
                let mut arns = Vec::new();
                let mut pages = aws.elbv2().describe_target_groups().into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("target group"), "DescribeTargetGroups"))?;
                    arns.extend(page.target_groups().iter().filter_map(|tg| {
                        Some((
                            tg.target_group_arn()?.to_string(),
                            tg.vpc_id().unwrap_or_default().to_string(),
                        ))
                    }));
                }
                self.elb_tags(aws, arns).await
            })
            .await
            .map(Vec::as_slice)
    }
}
