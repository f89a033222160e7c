//! The ECS cluster a service runs in: Fargate and Fargate Spot capacity, shared by services.

use super::*;

pub const CAPACITY_PROVIDERS: &str = "FARGATE,FARGATE_SPOT";

/// The ECS cluster, with Fargate and Fargate Spot as capacity providers. Shared by services: created when missing,
/// never deleted by `delete service`.
pub struct EcsClusterRes {
    pub id: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for EcsClusterRes {
    resource_metadata!("ecs-cluster", Phase::Cluster);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default().attr("capacityProviders", CAPACITY_PROVIDERS, Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let out = ctx
            .aws
            .ecs()
            .describe_clusters()
            .clusters(&self.name)
            .send()
            .await
            .map_err(aws_err(format!("ECS cluster {}", self.name), "DescribeClusters"))?;
        Ok(out.clusters().iter().find(|c| c.status() == Some("ACTIVE")).map(|c| {
            let mut providers: Vec<&str> = c.capacity_providers().iter().map(String::as_str).collect();
            providers.sort();
            Observed {
                id: c.cluster_arn().unwrap_or_default().to_string(),
                attrs: BTreeMap::from([("capacityProviders", providers.join(","))]),
                outputs: outputs(&[("id", c.cluster_arn().unwrap_or_default()), ("name", &self.name)]),
            }
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        _: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let what = format!("ECS cluster {}", self.name);
        let strategy = ecs::CapacityProviderStrategyItem::builder()
            .capacity_provider("FARGATE")
            .weight(1)
            .build()?;
        let arn = match actual {
            None => {
                let out = ctx
                    .aws
                    .ecs()
                    .create_cluster()
                    .cluster_name(&self.name)
                    .capacity_providers("FARGATE")
                    .capacity_providers("FARGATE_SPOT")
                    .default_capacity_provider_strategy(strategy)
                    .set_tags(Some(ecs_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&what, "CreateCluster"))?;
                out.cluster()
                    .and_then(|c| c.cluster_arn())
                    .unwrap_or_default()
                    .to_string()
            }
            Some(a) => {
                ctx.aws
                    .ecs()
                    .put_cluster_capacity_providers()
                    .cluster(&self.name)
                    .capacity_providers("FARGATE")
                    .capacity_providers("FARGATE_SPOT")
                    .default_capacity_provider_strategy(strategy)
                    .send()
                    .await
                    .map_err(aws_err(&what, "PutClusterCapacityProviders"))?;
                a.id.clone()
            }
        };
        Ok(Step::Done(outputs(&[("id", &arn), ("name", &self.name)])))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}
