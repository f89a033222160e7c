//! The reconcile-engine resources of an ECS service, one file per kind: the ECS cluster (shared, never deleted by
//! a service), the CloudWatch log group, the task definition (a new revision only when what kforge renders differs
//! from the latest one) and the service itself, whose `ready` waits for a steady deployment and turns a failed one
//! into a report of the stopped tasks' reasons and the rollback.

mod cluster;
mod log_group;
mod service;
mod task_definition;

pub use cluster::*;
pub use log_group::*;
pub use service::*;
pub use task_definition::*;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types as ecs;

use super::model::{EcsService, HealthCheck};
use crate::aws::{ErrorClass, aws_err, sdk_class};
use crate::engine::{
    Change, Ctx, Desired, Inputs, Mutability, Observed, Outputs, Phase, Resource, Step, Value, diff_attrs,
    resource_metadata,
};

fn outputs(pairs: &[(&str, &str)]) -> Outputs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ecs_tags(tags: &BTreeMap<String, String>) -> Vec<ecs::Tag> {
    tags.iter()
        .map(|(k, v)| ecs::Tag::builder().key(k).value(v).build())
        .collect()
}

/// A value kforge already knows (a kforge cluster's VPC): a node dependants can read outputs from.
pub struct Known {
    pub id: String,
    pub outputs: Outputs,
    pub deps: Vec<String>,
}

#[async_trait]
impl Resource for Known {
    resource_metadata!("known", Phase::Network);
    fn desired(&self, _: &Inputs) -> Desired {
        Desired::default()
    }
    async fn find(&self, _: &Ctx) -> anyhow::Result<Option<Observed>> {
        Ok(Some(Observed {
            id: self.outputs.get("id").cloned().unwrap_or_default(),
            attrs: BTreeMap::new(),
            outputs: self.outputs.clone(),
        }))
    }
    async fn apply(&self, _: &Ctx, _: &Change, _: Option<&Observed>, _: &Desired) -> anyhow::Result<Step<Outputs>> {
        Ok(Step::Done(self.outputs.clone()))
    }
    async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<Step<()>> {
        Ok(Step::Done(()))
    }
}
