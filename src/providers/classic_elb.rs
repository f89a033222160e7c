//! Classic load balancers Kubernetes made for the cluster: the AWS cloud controller manager's service controller
//! answers a `Service` of type LoadBalancer with a classic ELB by default, tagged `kubernetes.io/cluster/NAME:
//! owned`. kforge never creates one; delete removes them after what could re-create them (the control plane,
//! the machines) and before what they hold (their security group, the subnets, the internet gateway).
//!
//! This kind was added after delete became a walk of the kinds: this file and one line in `providers::kinds`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::aws::tags::kubernetes_cluster_key;
use crate::aws::{ErrorClass, aws_err, sdk_class};
use crate::delete::{Doomed, Kind, Order};
use crate::engine::{Ctx, Phase, Step};

#[derive(Debug)]
pub struct ClassicLoadBalancerKind;

/// DescribeTags takes at most 20 load balancer names.
const TAGS_PER_CALL: usize = 20;

#[async_trait]
impl Kind for ClassicLoadBalancerKind {
    fn name(&self) -> &'static str {
        "classic-load-balancer"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        let elb = ctx.aws.elb();
        let what = format!("classic load balancers of cluster {}", ctx.cluster);
        // (name, VPC) of every classic load balancer in the region: the API cannot filter by tag.
        let mut all: Vec<(String, String)> = Vec::new();
        let mut pages = elb.describe_load_balancers().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(aws_err(&what, "DescribeLoadBalancers"))?;
            all.extend(page.load_balancer_descriptions().iter().filter_map(|lb| {
                Some((
                    lb.load_balancer_name()?.to_string(),
                    lb.vpc_id().unwrap_or_default().to_string(),
                ))
            }));
        }
        // Only what Kubernetes marked as the cluster's own; `shared` means someone else's, used by the cluster.
        let owned_key = kubernetes_cluster_key(&ctx.cluster);
        let mut out = Vec::new();
        for chunk in all.chunks(TAGS_PER_CALL) {
            let tagged = elb
                .describe_tags()
                .set_load_balancer_names(Some(chunk.iter().map(|(n, _)| n.clone()).collect()))
                .send()
                .await
                .map_err(aws_err(&what, "DescribeTags"))?;
            for d in tagged.tag_descriptions() {
                let owned = d
                    .tags()
                    .iter()
                    .any(|t| t.key() == owned_key && t.value() == Some("owned"));
                if let (true, Some((name, vpc))) = (
                    owned,
                    chunk.iter().find(|(n, _)| Some(n.as_str()) == d.load_balancer_name()),
                ) {
                    out.push(Doomed::new(kind, name, None, Some(vpc)));
                }
            }
        }
        Ok(out)
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        let name = &item.cloud_id;
        // Deleting one that is gone succeeds; the answer is final (its interfaces are released by AWS after,
        // which the security group's and subnet's deletes wait out as `DependencyViolation`).
        match ctx
            .aws
            .elb()
            .delete_load_balancer()
            .load_balancer_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(Step::Done(())),
            Err(e) if sdk_class(&e) == ErrorClass::NotFound => Ok(Step::Done(())),
            Err(e) => Err(aws_err(format!("classic load balancer {name}"), "DeleteLoadBalancer")(e).into()),
        }
    }
    fn after(&self) -> &'static [Order] {
        // The service controller would make it again while the cluster runs.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
    fn before(&self) -> &'static [Order] {
        // Its network interfaces sit in the subnets, in its security group, behind the internet gateway.
        &[
            Order::Kind("security-group"),
            Order::Kind("internet-gateway"),
            Order::Kind("network-interface"),
            Order::InVpc("subnet"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_after_what_recreates_it_and_before_what_it_holds() {
        let kinds = crate::providers::kinds();
        let of = |name: &str, id: &str, vpc: &str| {
            let kind = kinds.iter().find(|k| k.name() == name).expect("registered");
            Doomed::new(kind, id, None, Some(vpc))
        };
        let all = vec![
            of("classic-load-balancer", "a1b2", "vpc-1"),
            of("instance", "i-1", "vpc-1"),
            of("security-group", "sg-k8s-elb", "vpc-1"),
            of("subnet", "subnet-1", "vpc-1"),
            of("subnet", "subnet-9", "vpc-9"),
            of("vpc", "vpc-1", "vpc-1"),
        ];
        let deps = |i: usize| crate::delete::deletion_deps(&all[i], &all);
        assert_eq!(deps(0), ["instance i-1"]);
        assert!(deps(2).contains(&"classic-load-balancer a1b2".to_string()));
        assert!(deps(3).contains(&"classic-load-balancer a1b2".to_string()));
        assert!(deps(4).is_empty(), "a subnet of another VPC does not wait");
        assert!(deps(5).contains(&"classic-load-balancer a1b2".to_string()));
    }

    /// What moto cannot show, answered by aws-smithy-mocks: more load balancers than one DescribeTags call takes,
    /// tagged alike except for the cluster's key, and a delete AWS refuses.
    mod mocked {
        use super::*;
        use crate::aws::Aws;
        use aws_sdk_elasticloadbalancing::error::ErrorMetadata;
        use aws_sdk_elasticloadbalancing::operation::delete_load_balancer::{
            DeleteLoadBalancerError, DeleteLoadBalancerOutput,
        };
        use aws_sdk_elasticloadbalancing::operation::describe_load_balancers::DescribeLoadBalancersOutput;
        use aws_sdk_elasticloadbalancing::operation::describe_tags::DescribeTagsOutput;
        use aws_sdk_elasticloadbalancing::types::{LoadBalancerDescription, Tag, TagDescription};
        use aws_smithy_mocks::{Rule, RuleMode, mock};

        fn ctx(rules: &[&Rule]) -> Ctx {
            let client = crate::aws::mock_client!(
                aws_sdk_elasticloadbalancing,
                RuleMode::Sequential,
                rules.iter().copied()
            );
            Ctx::new(Aws::with_elb(client), "demo")
        }

        fn kind() -> Arc<dyn Kind> {
            Arc::new(ClassicLoadBalancerKind)
        }

        /// lb-0 .. lb-24: every third owned by cluster demo, lb-1 shared with it, the rest another cluster's.
        fn tags_of(name: &str) -> TagDescription {
            let n: usize = name.trim_start_matches("lb-").parse().unwrap();
            let (key, value) = match n {
                _ if n.is_multiple_of(3) => ("kubernetes.io/cluster/demo", "owned"),
                1 => ("kubernetes.io/cluster/demo", "shared"),
                _ => ("kubernetes.io/cluster/demo-2", "owned"),
            };
            TagDescription::builder()
                .load_balancer_name(name)
                .tags(Tag::builder().key(key).value(value).build().unwrap())
                .build()
        }

        #[tokio::test]
        async fn lists_what_the_cluster_owns_twenty_names_per_tags_call() {
            let all = mock!(aws_sdk_elasticloadbalancing::Client::describe_load_balancers).then_output(|| {
                DescribeLoadBalancersOutput::builder()
                    .set_load_balancer_descriptions(Some(
                        (0..25)
                            .map(|i| {
                                LoadBalancerDescription::builder()
                                    .load_balancer_name(format!("lb-{i}"))
                                    .vpc_id("vpc-1")
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
            let tags = |first: usize, count: usize| {
                mock!(aws_sdk_elasticloadbalancing::Client::describe_tags)
                    .match_requests(move |r| r.load_balancer_names().len() == count)
                    .then_output(move || {
                        DescribeTagsOutput::builder()
                            .set_tag_descriptions(Some(
                                (first..first + count).map(|i| tags_of(&format!("lb-{i}"))).collect(),
                            ))
                            .build()
                    })
            };
            let (first, second) = (tags(0, TAGS_PER_CALL), tags(20, 5));
            let ctx = ctx(&[&all, &first, &second]);
            let found = ClassicLoadBalancerKind.list(&ctx, &kind()).await.unwrap();
            let names: Vec<&str> = found.iter().map(|d| d.cloud_id.as_str()).collect();
            assert_eq!(
                names,
                [
                    "lb-0", "lb-3", "lb-6", "lb-9", "lb-12", "lb-15", "lb-18", "lb-21", "lb-24"
                ]
            );
            assert!(found.iter().all(|d| d.vpc.as_deref() == Some("vpc-1")));
            assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
        }

        #[tokio::test]
        async fn a_refused_delete_names_the_load_balancer_and_the_error_code() {
            let refused = mock!(aws_sdk_elasticloadbalancing::Client::delete_load_balancer).then_error(|| {
                DeleteLoadBalancerError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("not authorized to perform: elasticloadbalancing:DeleteLoadBalancer")
                        .build(),
                )
            });
            let ctx = ctx(&[&refused]);
            let item = Doomed::new(&kind(), "lb-0", None, Some("vpc-1"));
            let err = ClassicLoadBalancerKind.delete(&ctx, &item, true).await.unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("classic load balancer lb-0"), "{msg}");
            assert!(msg.contains("AccessDenied"), "{msg}");
            assert!(msg.contains("hint:"), "{msg}");
        }

        #[tokio::test]
        async fn one_already_gone_is_deleted() {
            // DeleteLoadBalancer models no error (AWS answers success for a name it does not know); an endpoint
            // that says LoadBalancerNotFound anyway means the same.
            let gone = mock!(aws_sdk_elasticloadbalancing::Client::delete_load_balancer).then_error(|| {
                DeleteLoadBalancerError::generic(
                    ErrorMetadata::builder()
                        .code("LoadBalancerNotFound")
                        .message("There is no ACTIVE Load Balancer named 'lb-0'")
                        .build(),
                )
            });
            let deleted = mock!(aws_sdk_elasticloadbalancing::Client::delete_load_balancer)
                .then_output(|| DeleteLoadBalancerOutput::builder().build());
            let ctx = ctx(&[&gone, &deleted]);
            let item = Doomed::new(&kind(), "lb-0", None, Some("vpc-1"));
            assert_eq!(
                ClassicLoadBalancerKind.delete(&ctx, &item, true).await.unwrap(),
                Step::Done(())
            );
            assert_eq!(
                ClassicLoadBalancerKind.delete(&ctx, &item, true).await.unwrap(),
                Step::Done(())
            );
        }
    }
}
