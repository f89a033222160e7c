//! The cluster's IAM OIDC provider (IAM roles for service accounts).

use super::*;

pub struct OidcProvider {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for OidcProvider {
    resource_metadata!("iam-oidc-provider", Phase::Cluster);
    fn desired(&self, inputs: &Inputs) -> Desired {
        let url = match inputs.get(CLUSTER_ID, "oidcIssuer") {
            Value::Known(u) => Value::Known(u.trim_start_matches("https://").to_string()),
            Value::Unknown => Value::Unknown,
        };
        Desired::default()
            .attr("url", url, Mutability::Replace)
            .attr("tags", render(&self.tags), Mutability::InPlace)
    }
    async fn find(&self, ctx: &Ctx) -> anyhow::Result<Option<Observed>> {
        let all = ctx.inventory.oidc_providers(&ctx.aws).await?;
        let mine: Vec<_> = all
            .iter()
            .filter(|p| p.tags.get(tags::RESOURCE) == Some(&self.id))
            .collect();
        Ok(mine.first().map(|p| Observed {
            id: p.arn.clone(),
            attrs: BTreeMap::from([("url", p.detail.clone()), ("tags", render_subset(&p.tags, &self.tags))]),
            outputs: Outputs::from([("id".to_string(), p.arn.clone()), ("arn".to_string(), p.arn.clone())]),
        }))
    }
    async fn apply(
        &self,
        ctx: &Ctx,
        _: &Change,
        actual: Option<&Observed>,
        desired: &Desired,
    ) -> anyhow::Result<Step<Outputs>> {
        let iam = ctx.aws.iam();
        match actual {
            None => {
                let url = desired.value("url")?;
                let out = iam
                    .create_open_id_connect_provider()
                    .url(format!("https://{url}"))
                    .client_id_list("sts.amazonaws.com")
                    .thumbprint_list(EKS_OIDC_ROOT_CA_THUMBPRINT)
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(&self.id, "CreateOpenIDConnectProvider"))?;
                let arn = out.open_id_connect_provider_arn().unwrap_or_default().to_string();
                Ok(Step::Done(Outputs::from([
                    ("id".to_string(), arn.clone()),
                    ("arn".to_string(), arn),
                ])))
            }
            Some(a) => {
                iam.tag_open_id_connect_provider()
                    .open_id_connect_provider_arn(&a.id)
                    .set_tags(Some(iam_tags(&self.tags)))
                    .send()
                    .await
                    .map_err(aws_err(format!("{} ({})", self.id, a.id), "TagOpenIDConnectProvider"))?;
                Ok(Step::Done(a.outputs.clone()))
            }
        }
    }
    async fn delete(&self, ctx: &Ctx, actual: &Observed) -> anyhow::Result<Step<()>> {
        delete_oidc_provider(ctx, &actual.id).await
    }
}

pub async fn delete_oidc_provider(ctx: &Ctx, arn: &str) -> anyhow::Result<Step<()>> {
    match ctx
        .aws
        .iam()
        .delete_open_id_connect_provider()
        .open_id_connect_provider_arn(arn)
        .send()
        .await
    {
        Ok(_) => Ok(Step::Done(())),
        Err(e) if crate::aws::sdk_class(&e) == crate::aws::ErrorClass::NotFound => Ok(Step::Done(())),
        Err(e) => Err(aws_err(format!("iam-oidc-provider ({arn})"), "DeleteOpenIDConnectProvider")(e).into()),
    }
}

/// What delete knows about the cluster's IAM OIDC providers (see `delete::Kind`).
#[derive(Debug)]
pub struct OidcProviderKind;

#[async_trait]
impl Kind for OidcProviderKind {
    fn name(&self) -> &'static str {
        "iam-oidc-provider"
    }
    fn phase(&self) -> Phase {
        Phase::Cluster
    }
    async fn list(&self, ctx: &Ctx, kind: &Arc<dyn Kind>) -> anyhow::Result<Vec<Doomed>> {
        Ok(ctx
            .inventory
            .oidc_providers(&ctx.aws)
            .await?
            .iter()
            .map(|p| Doomed::new(kind, &p.arn, p.tags.get(tags::RESOURCE).cloned(), None))
            .collect())
    }
    async fn delete(&self, ctx: &Ctx, item: &Doomed, _wait: bool) -> anyhow::Result<Step<()>> {
        delete_oidc_provider(ctx, &item.cloud_id).await
    }
    fn after(&self) -> &'static [Order] {
        &[Order::Kind("eks-cluster")]
    }
}
