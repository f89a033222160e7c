//! kforge's own control-plane bootstrap of self-built clusters: the PKI (`pki`), the SSH layer (`ssh`), the pinned
//! downloads (`assets`), etcd (`etcd`), the systemd units and files (`units`), the core addons applied through the
//! API (`addons`), and the staged run over every host (`run`).

pub mod addons;
pub mod assets;
pub mod etcd;
pub mod pki;
pub mod run;
pub mod ssh;
pub mod units;
