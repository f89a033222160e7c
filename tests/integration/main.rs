//! kforge's integration tests: the real binary against the testbed (moto behind a recording, fault-injecting
//! proxy). One test binary, so the AWS SDK is linked once.

mod bench_ansible;
mod bootstrap;
mod cli;
mod crash;
mod e2e_aws;
mod ecs;
mod eks;
mod errors;
mod kubeconfig;
mod kubernetes;
mod network;
mod push;
mod reliability;
mod security;
mod selfbuilt;
mod state_s3;
mod support;
