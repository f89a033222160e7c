//! The cluster's IAM roles and instance profiles (by path: IAM cannot list by tag) and OIDC providers (by tag).

use super::*;

impl Inventory {
    /// IAM roles kforge made for the cluster (those under its path). Listings carry no tags; finds look roles up by
    /// name.
    pub async fn roles(&self, aws: &Aws) -> anyhow::Result<&[aws_sdk_iam::types::Role]> {
        self.roles
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                let mut pages = aws
                    .iam()
                    .list_roles()
                    .path_prefix(role_path(&self.cluster))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(format!("IAM roles of cluster {}", self.cluster), "ListRoles"))?;
                    // The path is the cluster's own (`PathPrefix` is the server's to apply, the check is ours).
                    let path = role_path(&self.cluster);
                    out.extend(page.roles().iter().filter(|r| r.path() == path).cloned());
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
    }

    /// Instance profiles kforge made for the cluster (those under its IAM path).
    pub async fn instance_profiles(&self, aws: &Aws) -> anyhow::Result<&[aws_sdk_iam::types::InstanceProfile]> {
        self.instance_profiles
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                let mut pages = aws
                    .iam()
                    .list_instance_profiles()
                    .path_prefix(role_path(&self.cluster))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(aws_err(self.what("instance profile"), "ListInstanceProfiles"))?;
                    let path = role_path(&self.cluster);
                    out.extend(page.instance_profiles().iter().filter(|p| p.path() == path).cloned());
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
            .map(Vec::as_slice)
    }

    /// IAM OIDC providers tagged with the cluster.
    pub async fn oidc_providers(&self, aws: &Aws) -> anyhow::Result<&[Tagged]> {
        self.oidc_providers
            .get_or_try_init(|| async {
                let list = aws
                    .iam()
                    .list_open_id_connect_providers()
                    .send()
                    .await
                    .map_err(aws_err("IAM OIDC providers", "ListOpenIDConnectProviders"))?;
                let arns: Vec<String> = list
                    .open_id_connect_provider_list()
                    .iter()
                    .filter_map(|p| p.arn().map(str::to_string))
                    .collect();
                let described = futures::future::try_join_all(arns.iter().map(|arn| async move {
                    let p = aws
                        .iam()
                        .get_open_id_connect_provider()
                        .open_id_connect_provider_arn(arn)
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow::Error::from(aws_err(format!("OIDC provider {arn}"), "GetOpenIDConnectProvider")(e))
                        })?;
                    Ok::<_, anyhow::Error>(Tagged {
                        arn: arn.clone(),
                        detail: p.url().unwrap_or_default().trim_start_matches("https://").to_string(),
                        tags: p
                            .tags()
                            .iter()
                            .map(|t| (t.key().to_string(), t.value().to_string()))
                            .collect(),
                    })
                }))
                .await?;
                Ok::<_, anyhow::Error>(
                    described
                        .into_iter()
                        .filter(|p| p.tags.get(tags::CLUSTER) == Some(&self.cluster))
                        .collect(),
                )
            })
            .await
            .map(Vec::as_slice)
    }
}
