//! kforge's own control-plane bootstrap of self-built clusters (issue 5), built piece by piece: so far the PKI
//! (`pki`) and the SSH layer (`ssh`). Fan-out over many hosts, asset manifests, etcd and the Kubernetes units follow; until they exist the bootstrap
//! phase is refused before any cloud call (see `providers::unbuilt_phases`).

pub mod pki;
pub mod ssh;
