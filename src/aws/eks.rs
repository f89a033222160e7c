//! EKS lookups shared by the providers, the inventory and the commands: each describes one object as EKS sees it
//! now and answers `None` when EKS says it does not exist, so callers tell "absent" from "failed" in one place.

use super::{Aws, aws_err};

/// `Ok(None)` for an EKS "not found" answer, the object otherwise; other errors name `what`.
fn found<T, E, R>(
    r: Result<T, aws_sdk_eks::error::SdkError<E, R>>,
    what: &str,
    operation: &'static str,
) -> anyhow::Result<Option<T>>
where
    E: aws_sdk_eks::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + super::HasStatus,
{
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if super::sdk_class(&e) == super::ErrorClass::NotFound => Ok(None),
        Err(e) => Err(aws_err(what, operation)(e).into()),
    }
}

/// The EKS cluster `name` as EKS describes it now (not a run's snapshot); `None` when there is none.
pub async fn describe_cluster(
    aws: &Aws,
    name: &str,
    what: &str,
) -> anyhow::Result<Option<aws_sdk_eks::types::Cluster>> {
    let r = aws.eks().describe_cluster().name(name).send().await;
    Ok(found(r, what, "DescribeCluster")?.and_then(|o| o.cluster))
}

pub async fn describe_nodegroup(
    aws: &Aws,
    cluster: &str,
    name: &str,
    what: &str,
) -> anyhow::Result<Option<aws_sdk_eks::types::Nodegroup>> {
    let r = aws
        .eks()
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await;
    Ok(found(r, what, "DescribeNodegroup")?.and_then(|o| o.nodegroup))
}

pub async fn describe_fargate_profile(
    aws: &Aws,
    cluster: &str,
    name: &str,
    what: &str,
) -> anyhow::Result<Option<aws_sdk_eks::types::FargateProfile>> {
    let r = aws
        .eks()
        .describe_fargate_profile()
        .cluster_name(cluster)
        .fargate_profile_name(name)
        .send()
        .await;
    Ok(found(r, what, "DescribeFargateProfile")?.and_then(|o| o.fargate_profile))
}

pub async fn describe_addon(
    aws: &Aws,
    cluster: &str,
    name: &str,
    what: &str,
) -> anyhow::Result<Option<aws_sdk_eks::types::Addon>> {
    let r = aws
        .eks()
        .describe_addon()
        .cluster_name(cluster)
        .addon_name(name)
        .send()
        .await;
    Ok(found(r, what, "DescribeAddon")?.and_then(|o| o.addon))
}
