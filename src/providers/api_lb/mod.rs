//! The Kubernetes API endpoint of a self-built cluster with several masters: a network load balancer with a TCP
//! 6443 listener forwarding to a target group that holds every master. (With one master the endpoint is the
//! master's own address.)
//!
//! One file per kind: `load_balancer`, `target_group`, `listener`, `targets`; the names and tags they share are here.

use crate::delete::{Doomed, Kind, Order};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, IpAddressType, LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TargetDescription, TargetTypeEnum,
};
use sha2::Digest as _;

use crate::aws::tags::{self, render, render_subset};
use crate::aws::{Aws, ErrorClass, aws_err, class_of, is_not_found, sdk_class};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, resource_metadata,
};

pub const API_PORT: i32 = 6443;

/// An ELBv2 name (at most 32 characters, unique per region): `kforge-CLUSTER-SUFFIX`, or for long cluster names
/// a prefix of it made unique by a hash of the whole.
pub fn elb_name(cluster: &str, suffix: &str) -> String {
    let full = format!("kforge-{cluster}-{suffix}");
    if full.len() <= 32 {
        return full;
    }
    let hash = sha2::Sha256::digest(full.as_bytes());
    let hash: String = hash.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let keep = 32 - suffix.len() - hash.len() - 4;
    let prefix = cluster[..keep.min(cluster.len())].trim_end_matches('-');
    format!("k-{prefix}-{hash}-{suffix}")
}

fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The ARN of the ELBv2 object of the cluster tagged `logical`.
fn tagged_arn<'a>(
    items: &'a [crate::aws::inventory::Tagged],
    logical: &str,
) -> Option<&'a crate::aws::inventory::Tagged> {
    items
        .iter()
        .find(|t| t.tags.get(tags::RESOURCE).map(String::as_str) == Some(logical))
}

fn csv(v: &str) -> Vec<String> {
    v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

// ---------------------------------------------------------------- load balancer

/// `DNS:6443` of the cluster's API load balancer, if it has one.
pub async fn api_endpoint(aws: &Aws, cluster: &str) -> anyhow::Result<Option<String>> {
    let inv = crate::aws::inventory::Inventory::new(cluster);
    let Some(lb) = tagged_arn(inv.load_balancers(aws).await?, "load-balancer/api") else {
        return Ok(None);
    };
    let out = aws
        .elbv2()
        .describe_load_balancers()
        .load_balancer_arns(&lb.arn)
        .send()
        .await
        .map_err(aws_err("load-balancer/api", "DescribeLoadBalancers"))?;
    Ok(out
        .load_balancers()
        .first()
        .and_then(|l| l.dns_name())
        .map(|d| format!("{d}:{API_PORT}")))
}

mod listener;
mod load_balancer;
mod target_group;
mod targets;
pub use listener::*;
pub use load_balancer::*;
pub use target_group::*;
pub use targets::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elb_names_fit_32_characters_and_stay_distinct() {
        assert_eq!(elb_name("demo", "api"), "kforge-demo-api");
        let a = elb_name("a-very-long-cluster-name-for-the-ml-team", "api");
        let b = elb_name("a-very-long-cluster-name-for-the-ml-team2", "api");
        assert!(a.len() <= 32 && b.len() <= 32, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-api"), "{a}");
        assert!(!a.contains("--"), "{a}");
    }
}
