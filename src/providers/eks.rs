//! Provider eks: the security phase (the control plane's and the nodes' IAM roles). The cluster phase (EKS
//! cluster, nodegroups, Fargate profiles, addons, OIDC) is not built yet; `providers::selected_phases` refuses it.

use std::sync::Arc;

use crate::aws::tags::Tagger;
use crate::engine::Resource;
use crate::model::Cluster;
use crate::providers::iam::{ExistingRole, IamRole};

/// What the EKS control plane needs to manage ENIs, load balancers and logs.
pub const CLUSTER_POLICIES: &[&str] = &["AmazonEKSClusterPolicy"];
/// What a managed node needs: join the cluster, run the VPC CNI, pull from ECR.
pub const NODE_POLICIES: &[&str] = &[
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
];

/// Role names: `kforge-CLUSTER-cluster` and `kforge-CLUSTER-node` (at most 55 characters of IAM's 64).
pub fn role_name(cluster: &str, which: &str) -> String {
    format!("kforge-{cluster}-{which}")
}

pub fn security_resources(cluster: &Cluster) -> Vec<Arc<dyn Resource>> {
    let tagger = Tagger {
        cluster: cluster.name.clone(),
        extra: cluster.tags.clone(),
    };
    let roles = [
        (
            "role/cluster",
            "cluster",
            "eks.amazonaws.com",
            CLUSTER_POLICIES,
            &cluster.iam.cluster_role_arn,
            "spec.iam.clusterRoleArn",
        ),
        (
            "role/node",
            "node",
            "ec2.amazonaws.com",
            NODE_POLICIES,
            &cluster.iam.node_role_arn,
            "spec.iam.nodeRoleArn",
        ),
    ];
    roles
        .into_iter()
        .map(|(id, which, service, policies, existing, field)| -> Arc<dyn Resource> {
            match existing {
                Some(arn) => Arc::new(ExistingRole {
                    id: id.into(),
                    arn: arn.clone(),
                    field,
                    deps: Vec::new(),
                }),
                None => Arc::new(IamRole {
                    id: id.into(),
                    name: role_name(&cluster.name, which),
                    cluster: cluster.name.clone(),
                    service: service.into(),
                    managed_policies: policies.iter().map(|p| p.to_string()).collect(),
                    tags: tagger.tags(id, &[]),
                    deps: Vec::new(),
                }),
            }
        })
        .collect()
}
