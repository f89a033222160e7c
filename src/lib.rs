//! kforge: provisions Kubernetes clusters on AWS (EKS or self-built) from a declarative spec.
//!
//! Data flow: `spec` (YAML DTOs) → `model` (validated, defaulted) → `providers` (resources per phase) →
//! `engine` (observe by tags, diff, plan, apply concurrently) → AWS via `aws`; `state` records the result;
//! `delete` sweeps everything tagged with a cluster. See ARCHITECTURE.md.

pub mod app;
pub mod assets;
pub mod aws;
pub mod bootstrap;
pub mod cli;
pub mod day2;
pub mod delete;
pub mod ecs;
pub mod engine;
pub mod errors;
pub mod fsutil;
pub mod kubeconfig;
pub mod model;
pub mod progress;
pub mod providers;
pub mod registry;
pub mod selfbuilt;
pub mod shell;
pub mod spec;
pub mod state;
