//! Network interfaces the cluster's pods left behind (delete only: kforge creates none).

use super::*;

#[derive(Debug)]
pub struct NetworkInterfaceKind;

#[async_trait]
impl Kind for NetworkInterfaceKind {
    fn name(&self) -> &'static str {
        "network-interface"
    }
    /// Kubernetes' leftovers go with the cluster.
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .leftover_network_interfaces(&ctx.aws)
            .await?
            .iter()
            .map(|e| Doomed::new(kind, e.network_interface_id().unwrap_or_default(), None, e.vpc_id()))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        let id = &item.cloud_id;
        let r = ctx
            .aws
            .ec2()
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await;
        let r = r.map(|_| ()).map_err(|e| {
            anyhow::Error::from(aws_err(format!("network-interface ({id})"), "DeleteNetworkInterface")(
                e,
            ))
        });
        // An interface still attached answers InUse: blocked until what holds it is gone.
        deletion_step(r, &format!("network interface {id}"))
    }
    fn after(&self) -> &'static [Order] {
        // Pods' interfaces are detached once what ran them is gone.
        &[
            Order::Kind("eks-cluster"),
            Order::Kind("eks-nodegroup"),
            Order::Kind("eks-fargate-profile"),
            Order::Kind("load-balancer"),
            Order::Kind("auto-scaling-group"),
            Order::Kind("instance"),
        ]
    }
}
