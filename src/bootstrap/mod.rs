//! kforge's own control-plane bootstrap of self-built clusters (issue 5), built piece by piece: so far the PKI
//! (`pki`), the SSH layer (`ssh`) and the etcd step (`etcd`). Fan-out over many hosts, asset manifests, the
//! Kubernetes units and addons follow; until they exist the bootstrap phase is refused before any cloud call (see
//! `providers::unbuilt_phases`).

pub mod assets;
pub mod etcd;
pub mod pki;
pub mod run;
pub mod ssh;
pub mod units;
