//! Real machines for the bootstrap tests: Debian bookworm root file systems (systemd, sshd, etcd-server,
//! containerd, python3 for the Ansible benchmark's modules) made with debootstrap once and cached by their recipe,
//! imported into a private dockerd and run as systemd containers on a network of their own, each with its own
//! address. A fresh client key and host key are put in for every run.
//!
//! The containers get what the real kubelet, kube-proxy and pods need of a host (../shared/TESTBED.md, "Real
//! Kubernetes in the host containers"). These are lab-only: nothing here changes a file kforge renders.
//! - `docker run` extras: a private cgroup namespace, /dev/kmsg, the capabilities the kubelet and kube-proxy use,
//!   no seccomp/AppArmor confinement, writable /proc/sys, and a volume for containerd's root (overlay mounts fail
//!   on the container's own overlay root);
//! - an entrypoint (`LAB_INIT`) that makes every cgroup v1 hierarchy writable before it starts systemd, so systemd
//!   runs in legacy mode and the kubelet finds the name=systemd hierarchy;
//! - systemd drop-ins pointing kforge's containerd and kube-proxy at lab copies of their configurations with two
//!   settings a machine of its own never needs: `restrict_oom_score_adj` (this machine's root lacks
//!   CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj) and `conntrack.maxPerCore: 0` (the conntrack sysctls are
//!   read-only outside the initial network namespace).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest as _;

use super::registry::Dockerd;

const PACKAGES: &str = "openssh-server,systemd,systemd-sysv,iproute2,ca-certificates,curl,etcd-server,etcd-client,containerd,runc,containernetworking-plugins,python3";

/// Where the tests keep what outlives a run (`KFORGE_CACHE`, else ~/.cache/kforge, as scripts/lib.sh).
pub fn cache_base() -> PathBuf {
    std::env::var_os("KFORGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kforge"))
}

fn cache_dir() -> PathBuf {
    let base = cache_base();
    let recipe = format!("bookworm minbase {PACKAGES}");
    let digest = format!("{:x}", sha2::Sha256::digest(recipe.as_bytes()));
    base.join("hosts").join(&digest[..16])
}

/// The cached root file system, made on first use (about two minutes).
pub fn rootfs() -> PathBuf {
    // One debootstrap at a time: a second lab would otherwise clear the first one's half-made tree.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = cache_dir();
    let rootfs = dir.join("rootfs");
    if rootfs.join("usr/bin/etcd").exists() {
        return rootfs;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join("rootfs.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), "bookworm"])
        .arg(&tmp)
        .output()
        .expect("debootstrap runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "debootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &rootfs).unwrap();
    rootfs
}

/// A `172.31.N.0/24` no bridge on this machine has and no other lab of this process took: every lab's dockerd
/// puts its network's gateway on a bridge of this machine, and they all share one routing table.
fn free_subnet() -> u32 {
    static TAKEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let in_use = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let first = std::process::id() % 200;
    let net = (0..200)
        .map(|i| 16 + (first + i) % 200)
        .find(|n| !taken.contains(n) && !in_use.contains(&format!(" 172.31.{n}.")))
        .expect("a free 172.31.N.0/24 subnet");
    taken.push(net);
    net
}

/// Running host containers; removed (with their network) on drop.
pub struct Hosts {
    pub dockerd: Dockerd,
    pub names: Vec<String>,
    pub addresses: Vec<String>,
    pub client_key: PathBuf,
    pub host_pub: String,
    /// This machine's address on the hosts' network (where the hosts reach servers the test starts).
    pub gateway: String,
    network: String,
    _keys: tempfile::TempDir,
    /// Labs of this process run one at a time: their tests (a master killed 700 ms into a run) depend on
    /// timing that two labs of five containers on a 2-core machine upset.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Makes the cgroup hierarchies writable, then becomes systemd (the containers' entrypoint).
const LAB_INIT: &str = r#"#!/bin/sh
mount -o remount,rw /sys/fs/cgroup
umount /sys/fs/cgroup/unified 2>/dev/null
awk '$3 == "cgroup" {print $2}' /proc/self/mounts | while read -r m; do mount -o remount,bind,rw "$m"; done
exec /lib/systemd/systemd
"#;

fn keygen(path: &Path, comment: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

impl Hosts {
    pub fn start(names: &[&str]) -> Hosts {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let rootfs = rootfs();
        let keys = tempfile::tempdir().unwrap();
        keygen(&keys.path().join("client"), "kforge-test");
        keygen(&keys.path().join("host"), "host");
        // This lab's keys go into the shared root file system just before it is imported: labs of this process
        // starting at once take turns, or one would import the other's keys.
        static IMPORTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let importing = IMPORTING.lock().unwrap_or_else(|e| e.into_inner());
        let ssh = rootfs.join("root/.ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::copy(keys.path().join("client.pub"), ssh.join("authorized_keys")).unwrap();
        for (from, to) in [
            ("host", "ssh_host_ed25519_key"),
            ("host.pub", "ssh_host_ed25519_key.pub"),
        ] {
            std::fs::copy(keys.path().join(from), rootfs.join("etc/ssh").join(to)).unwrap();
        }
        for entry in std::fs::read_dir(rootfs.join("etc/ssh")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            if name.starts_with("ssh_host_") && !name.starts_with("ssh_host_ed25519") {
                std::fs::remove_file(rootfs.join("etc/ssh").join(name)).unwrap();
            }
        }
        let init = rootfs.join("usr/local/sbin/kforge-lab-init");
        std::fs::write(&init, LAB_INIT).unwrap();
        std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let status = Command::new("chroot")
            .arg(&rootfs)
            .args(["systemctl", "enable", "ssh"])
            .output()
            .unwrap();
        assert!(status.status.success());

        let dockerd = Dockerd::start();
        let import = format!(
            "tar -C {} -c . | docker import -c 'ENTRYPOINT [\"/lib/systemd/systemd\"]' - kforge-host:test",
            rootfs.display()
        );
        let out = Command::new("sh")
            .args(["-c", &import])
            .env("DOCKER_HOST", &dockerd.host)
            .output()
            .unwrap();
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
        drop(importing);
        let net = free_subnet();
        let network = "kforge-hosts".to_string();
        let out = dockerd.docker(&["network", "create", "--subnet", &format!("172.31.{net}.0/24"), &network]);
        assert!(
            out.status.success(),
            "network: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut addresses = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ip = format!("172.31.{net}.{}", 11 + i);
            let out = dockerd.docker(&[
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                name,
                "--network",
                &network,
                "--ip",
                &ip,
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "-e",
                "container=docker",
                "--cgroupns",
                "private",
                "--device",
                "/dev/kmsg",
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "NET_ADMIN",
                "--cap-add",
                "SYSLOG",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--security-opt",
                "systempaths=unconfined",
                "-v",
                "/var/lib/kforge-containerd",
                "--entrypoint",
                "/usr/local/sbin/kforge-lab-init",
                "kforge-host:test",
            ]);
            assert!(
                out.status.success(),
                "run {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            addresses.push(ip);
        }
        let hosts = Hosts {
            dockerd,
            names: names.iter().map(|n| n.to_string()).collect(),
            addresses,
            client_key: keys.path().join("client"),
            host_pub: std::fs::read_to_string(keys.path().join("host.pub")).unwrap(),
            gateway: format!("172.31.{net}.1"),
            network,
            _keys: keys,
            _turn: turn,
        };
        std::fs::write(
            hosts._keys.path().join("known_hosts"),
            format!("* {}\n", hosts.host_pub.trim()),
        )
        .unwrap();
        for name in names {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while hosts.exec(name, "true").0 != 0 {
                assert!(std::time::Instant::now() < until, "{name}: sshd did not answer");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            hosts.lab_drop_ins(name);
        }
        hosts
    }

    /// Writes `content` to `path` on host `name` (through docker).
    pub fn write(&self, name: &str, path: &str, content: &str) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        let (s, out) = self.exec(
            name,
            &format!("mkdir -p \"$(dirname {path})\" && echo {b64} | base64 -d > {path}"),
        );
        assert_eq!(s, 0, "write {path} on {name}: {out}");
    }

    /// The lab copies of containerd's and kube-proxy's configurations (kforge's own, plus the one setting each
    /// that this machine needs) and the drop-ins that point kforge's units at them.
    fn lab_drop_ins(&self, name: &str) {
        use kforge::bootstrap::units;
        let cri = "[plugins.\"io.containerd.grpc.v1.cri\"]\n";
        let containerd = units::render(
            units::CONTAINERD_CONFIG,
            &[("cluster", "lab"), ("sandbox_image", "registry.k8s.io/pause:3.10")],
        )
        .replacen(cri, &format!("{cri}  restrict_oom_score_adj = true\n"), 1);
        assert!(containerd.contains("restrict_oom_score_adj"), "{containerd}");
        self.write(name, "/etc/kforge-lab/containerd.toml", &containerd);
        self.write(
            name,
            "/etc/systemd/system/kforge-containerd.service.d/lab.conf",
            "[Service]\nExecStart=\nExecStart=/opt/kforge/bin/containerd --config /etc/kforge-lab/containerd.toml\n",
        );
        let proxy = units::render(
            units::KUBE_PROXY_CONFIG,
            &[("name", name), ("cluster", "lab"), ("pod_cidr", "10.244.0.0/16")],
        ) + "conntrack:\n  maxPerCore: 0\n";
        self.write(name, "/etc/kforge-lab/kube-proxy-config.yaml", &proxy);
        self.write(
            name,
            "/etc/systemd/system/kforge-kube-proxy.service.d/lab.conf",
            &format!(
                "[Service]\nExecStart=\nExecStart=/opt/kforge/bin/kube-proxy --config=/etc/kforge-lab/kube-proxy-config.yaml \
                 --hostname-override={name}\n"
            ),
        );
    }
}

impl Hosts {
    /// Runs `command` on host `name` as root through OpenSSH's client (not kforge's SSH); returns (status,
    /// stdout+stderr). Not `docker exec`: once the kubelet runs, runc can no longer join a lab container's cgroups
    /// from outside ("openat2 .../cgroup.procs: no such file or directory").
    pub fn exec(&self, name: &str, command: &str) -> (i32, String) {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no host {name}"));
        let out = Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self._keys.path().join("known_hosts").display()
            ))
            .arg("-i")
            .arg(&self.client_key)
            .arg(format!("root@{}", self.addresses[i]))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut rm = vec!["rm", "-f"];
        rm.extend(self.names.iter().map(String::as_str));
        let _ = self.dockerd.docker(&rm);
        let _ = self.dockerd.docker(&["network", "rm", &self.network]);
    }
}
