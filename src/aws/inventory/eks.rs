//! The cluster's EKS cluster (by name, kforge's only when tagged so) and its nodegroups, Fargate profiles and addons.

use super::*;

impl Inventory {
    /// The EKS cluster named like the kforge cluster, whoever owns it (finds check the tags), unless it is being
    /// deleted.
    pub async fn eks_cluster(&self, aws: &Aws) -> anyhow::Result<Option<&EksCluster>> {
        self.eks_cluster
            .get_or_try_init(|| async {
                crate::aws::eks::describe_cluster(aws, &self.cluster, &format!("EKS cluster {}", self.cluster)).await
            })
            .await
            .map(Option::as_ref)
    }

    /// The EKS cluster if kforge made it for this cluster (tagged so).
    pub async fn own_eks_cluster(&self, aws: &Aws) -> anyhow::Result<Option<&EksCluster>> {
        Ok(self
            .eks_cluster(aws)
            .await?
            .filter(|c| c.tags().and_then(|t| t.get(tags::CLUSTER)) == Some(&self.cluster)))
    }

    pub async fn nodegroups(&self, aws: &Aws) -> anyhow::Result<&[Nodegroup]> {
        self.nodegroups
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("nodegroups of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_nodegroups()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    names.extend(page.map_err(aws_err(&what, "ListNodegroups"))?.nodegroups().to_vec());
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_nodegroup()
                        .cluster_name(&self.cluster)
                        .nodegroup_name(n)
                        .send()
                        .await
                        .map(|o| o.nodegroup)
                        .map_err(|e| anyhow::Error::from(aws_err(format!("nodegroup {n}"), "DescribeNodegroup")(e)))
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }

    pub async fn fargate_profiles(&self, aws: &Aws) -> anyhow::Result<&[FargateProfile]> {
        self.fargate_profiles
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("Fargate profiles of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_fargate_profiles()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    names.extend(
                        page.map_err(aws_err(&what, "ListFargateProfiles"))?
                            .fargate_profile_names()
                            .to_vec(),
                    );
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_fargate_profile()
                        .cluster_name(&self.cluster)
                        .fargate_profile_name(n)
                        .send()
                        .await
                        .map(|o| o.fargate_profile)
                        .map_err(|e| {
                            anyhow::Error::from(aws_err(format!("Fargate profile {n}"), "DescribeFargateProfile")(e))
                        })
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }

    /// The cluster's EKS addons. An endpoint without the addon API (moto) has none to offer: deleting the cluster
    /// removes addons anyway, so delete carries on without them.
    pub async fn addons(&self, aws: &Aws) -> anyhow::Result<&[Addon]> {
        self.addons
            .get_or_try_init(|| async {
                if self.own_eks_cluster(aws).await?.is_none() {
                    return Ok(Vec::new());
                }
                let what = format!("addons of EKS cluster {}", self.cluster);
                let mut names = Vec::new();
                let mut pages = aws
                    .eks()
                    .list_addons()
                    .cluster_name(&self.cluster)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    match page.map_err(|e| anyhow::Error::from(aws_err(&what, "ListAddons")(e))) {
                        Ok(p) => names.extend(p.addons().to_vec()),
                        Err(e) if not_implemented(&e) => {
                            tracing::debug!("{e:#}; the endpoint has no addon API, addons are left to the cluster");
                            return Ok(Vec::new());
                        }
                        Err(e) => return Err(e),
                    }
                }
                let described = futures::future::try_join_all(names.iter().map(|n| async move {
                    aws.eks()
                        .describe_addon()
                        .cluster_name(&self.cluster)
                        .addon_name(n)
                        .send()
                        .await
                        .map(|o| o.addon)
                        .map_err(|e| anyhow::Error::from(aws_err(format!("addon {n}"), "DescribeAddon")(e)))
                }))
                .await?;
                Ok::<_, anyhow::Error>(described.into_iter().flatten().collect())
            })
            .await
            .map(Vec::as_slice)
    }
}
