//! kforge's own control-plane bootstrap of self-built clusters: the PKI (`pki`), the SSH layer (`ssh`) and the host it reaches (`host`), the hosts'
//! preflight checks (`preflight`), etcd (`etcd`), the systemd units and files
//! (`units`), the API client (`api`) and the core addons applied through it (`addons`), the health checks
//! (`health`), and the staged run over every host (`run`); for day 2, drain through the Eviction API (`drain`) and
//! etcd snapshots and restores (`backup`). The pinned downloads they install are `crate::assets`' manifests.

pub mod addons;
pub mod api;
pub mod backup;
pub mod drain;
pub mod etcd;
pub mod health;
pub mod host;
pub mod pki;
pub mod preflight;
pub mod run;
pub mod ssh;
pub mod units;
