//! Benchmark (run by `bench/bootstrap-vs-ansible`): kforge's file-and-command steps against Ansible's
//! (Debian's ansible-core) doing the same steps on the same 5 hosts (systemd + sshd containers). The files are
//! the ones kforge's bootstrap writes to each host (containerd's, then the control plane's on masters or the
//! node's on workers: units, configurations, certificates, kubeconfigs) and the commands around them are the
//! bootstrap's kind (directories, the architecture, a guarded marker, `systemctl daemon-reload` when a file
//! changed). Measured fresh and as a no-change re-run, alternating the tools, best of 3.
//!
//! kforge: its SSH layer as the bootstrap uses it (one connection per host, hosts in parallel, files synced in
//! three round trips with checksums compared on the host). Ansible: `copy`, `file` and `command` modules with
//! its fast settings (forks 5, pipelining, ControlPersist, no fact gathering) and host keys checked as kforge
//! checks them. A figure, not a test: nothing is asserted about time, only that both did the same work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kforge::bootstrap::host::{BootstrapHost, ExpectedHostKey};
use kforge::bootstrap::pki::{Member, Pki, PkiRequest};
use kforge::bootstrap::ssh::{self, FileSpec};
use kforge::bootstrap::units::{self, ClusterFacts};
use kforge::spec::HostRole;

use crate::support::hosts::Hosts;

const NAMES: [&str; 5] = ["master-1", "master-2", "master-3", "worker-1", "worker-2"];
const DIRS: &str = "mkdir -p /var/lib/kforge /var/cache/kforge/assets /opt/kforge/bin";
const STAMP: &str = "/var/lib/kforge/bench-stamp";

/// The files kforge's bootstrap puts on each host, in `NAMES` order.
fn files_per_host(hosts: &Hosts, pki_dir: &Path) -> Vec<Vec<FileSpec>> {
    let members: Vec<Member> = NAMES[..3]
        .iter()
        .zip(&hosts.addresses)
        .map(|(n, a)| Member {
            name: n.to_string(),
            address: a.parse().unwrap(),
        })
        .collect();
    let request = PkiRequest {
        cluster: "lab".into(),
        masters: members.clone(),
        nodes: NAMES
            .iter()
            .zip(&hosts.addresses)
            .map(|(n, a)| Member {
                name: n.to_string(),
                address: a.parse().unwrap(),
            })
            .collect(),
        api_endpoint: None,
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
    };
    let (pki, _) = Pki::ensure(pki_dir, &request).unwrap();
    let facts = ClusterFacts {
        cluster: "lab".into(),
        masters: members.clone(),
        api_url: format!("https://{}:6443", hosts.addresses[0]),
        service_cidr: "10.96.0.0/12".into(),
        pod_cidr: "10.244.0.0/16".into(),
        cluster_domain: "cluster.local".into(),
        cluster_dns: "10.96.0.10".into(),
        containerd_major: 1,
        sandbox_image: "registry.k8s.io/pause:3.10".into(),
        external_cloud: false,
        fail_cgroup_v1: false,
        eviction_hard: Default::default(),
        image_gc: None,
    };
    NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut files = units::runtime_files(&facts);
            if i < 3 {
                files.extend(units::control_plane_files(&facts, &pki, &members[i]));
            }
            files.extend(units::node_files(
                &facts,
                &pki,
                &units::NodeIdentity {
                    name,
                    address: &hosts.addresses[i],
                    labels: &BTreeMap::new(),
                    taints: &[],
                    master: i < 3,
                    provider_id: None,
                },
            ));
            files
        })
        .collect()
}

/// One kforge run over every host at once; returns (seconds, files written + guarded commands run).
fn kforge_run(targets: &[BootstrapHost], files: &[Vec<FileSpec>]) -> (f64, usize) {
    let started = Instant::now();
    let changes = std::thread::scope(|s| {
        let runs: Vec<_> = targets
            .iter()
            .zip(files)
            .map(|(host, files)| {
                s.spawn(move || {
                    let conn = ssh::connect(host, Duration::from_secs(30)).unwrap();
                    conn.run_ok("directories", DIRS).unwrap();
                    conn.run_ok("architecture", "uname -m").unwrap();
                    let written = conn.sync_files("files", files).unwrap();
                    let stamped = conn
                        .run_guarded("stamp", &format!("test -f {STAMP}"), &format!("touch {STAMP}"))
                        .unwrap();
                    if !written.is_empty() {
                        conn.run_ok("reload", "systemctl daemon-reload").unwrap();
                    }
                    written.len() + usize::from(stamped)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    });
    (started.elapsed().as_secs_f64(), changes)
}

/// An Ansible project doing the same steps: inventory, known hosts, settings, the files, the playbook.
fn ansible_project(dir: &Path, hosts: &Hosts, files: &[Vec<FileSpec>]) {
    let mut inventory = String::from("[all]\n");
    let mut known = String::new();
    for (name, address) in NAMES.iter().zip(&hosts.addresses) {
        inventory += &format!("{name} ansible_host={address}\n");
        known += &format!("{address} {}\n", hosts.host_pub.trim());
    }
    inventory += &format!(
        "[all:vars]\nansible_user=root\nansible_ssh_private_key_file={}\nansible_python_interpreter=/usr/bin/python3\n",
        hosts.client_key.display()
    );
    std::fs::write(dir.join("inventory.ini"), inventory).unwrap();
    std::fs::write(dir.join("known_hosts"), known).unwrap();
    std::fs::write(
        dir.join("ansible.cfg"),
        format!(
            "[defaults]\ninventory = inventory.ini\nforks = 5\nhost_key_checking = True\ngathering = explicit\n\
             retry_files_enabled = False\n\n[ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes\n",
            cp = dir.join("cp").display(),
            known = dir.join("known_hosts").display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("host_vars")).unwrap();
    for (name, files) in NAMES.iter().zip(files) {
        let mut vars = String::from("files:\n");
        let mut parents = BTreeSet::new();
        for f in files {
            let local = dir.join("files").join(name).join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(&local, &f.bytes).unwrap();
            vars += &format!("  - {{path: \"{}\", mode: \"{:04o}\"}}\n", f.path, f.mode);
            parents.insert(Path::new(&f.path).parent().unwrap().display().to_string());
        }
        vars += "dirs:\n";
        for p in parents {
            vars += &format!("  - \"{p}\"\n");
        }
        std::fs::write(dir.join("host_vars").join(format!("{name}.yml")), vars).unwrap();
    }
    std::fs::write(
        dir.join("playbook.yml"),
        format!(
            r#"- hosts: all
  gather_facts: false
  tasks:
    - name: directories
      ansible.builtin.command: {DIRS}
      changed_when: false
    - name: architecture
      ansible.builtin.command: uname -m
      changed_when: false
    - name: parents of the files
      ansible.builtin.file: {{path: "{{{{ item }}}}", state: directory}}
      loop: "{{{{ dirs }}}}"
    - name: files
      ansible.builtin.copy: {{src: "files/{{{{ inventory_hostname }}}}{{{{ item.path }}}}", dest: "{{{{ item.path }}}}", mode: "{{{{ item.mode }}}}"}}
      loop: "{{{{ files }}}}"
      register: written
    - name: stamp
      ansible.builtin.command: touch {STAMP}
      args: {{creates: {STAMP}}}
    - name: reload systemd
      ansible.builtin.command: systemctl daemon-reload
      when: written.changed
"#
        ),
    )
    .unwrap();
}

/// One ansible-playbook run; returns (seconds, the recap's changed count summed over hosts).
fn ansible_run(dir: &Path) -> (f64, usize) {
    let started = Instant::now();
    let out = Command::new("ansible-playbook")
        .arg("playbook.yml")
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook runs (bench/bootstrap-vs-ansible installs ansible-core)");
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let changed = stdout
        .lines()
        .filter(|l| l.contains(" : ok="))
        .map(|l| {
            let field = l.split_whitespace().find(|w| w.starts_with("changed=")).unwrap();
            field.trim_start_matches("changed=").parse::<usize>().unwrap()
        })
        .sum();
    (seconds, changed)
}

/// Removes what either tool wrote, so the next run starts fresh.
fn wipe(hosts: &Hosts, files: &[Vec<FileSpec>]) {
    for (name, files) in NAMES.iter().zip(files) {
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let (status, out) = hosts.exec(name, &format!("rm -f {} {STAMP}", paths.join(" ")));
        assert_eq!(status, 0, "{out}");
    }
}

#[test]
#[ignore = "benchmark: bench/bootstrap-vs-ansible"]
fn bench_file_steps_vs_ansible() {
    let hosts = Hosts::start(&NAMES);
    let scratch = tempfile::tempdir().unwrap();
    let files = files_per_host(&hosts, &scratch.path().join("pki"));
    let targets: Vec<BootstrapHost> = NAMES
        .iter()
        .zip(&hosts.addresses)
        .enumerate()
        .map(|(i, (name, address))| BootstrapHost {
            name: name.to_string(),
            role: if i < 3 { HostRole::Master } else { HostRole::Worker },
            address: address.clone(),
            port: 22,
            user: "root".into(),
            identity_file: Some(hosts.client_key.clone()),
            host_key: ExpectedHostKey::PublicKey {
                key: hosts.host_pub.trim().to_string(),
            },
            jump: None,
            instance_id: None,
            zone: None,
            group: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        })
        .collect();
    let project = scratch.path().join("ansible");
    std::fs::create_dir_all(project.join("cp")).unwrap();
    ansible_project(&project, &hosts, &files);
    let per_host: Vec<usize> = files.iter().map(Vec::len).collect();
    // Every file is written once per host, plus the stamp.
    let file_count: usize = per_host.iter().sum();

    let (mut kf, mut kr, mut af, mut ar) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        wipe(&hosts, &files);
        let (t, changes) = kforge_run(&targets, &files);
        assert_eq!(changes, file_count + NAMES.len(), "kforge fresh");
        kf = kf.min(t);
        let (t, changes) = kforge_run(&targets, &files);
        assert_eq!(changes, 0, "kforge re-run");
        kr = kr.min(t);

        wipe(&hosts, &files);
        let (t, changes) = ansible_run(&project);
        // Ansible counts a looped task once: files, stamp and daemon-reload changed on each host.
        assert_eq!(changes, 3 * NAMES.len(), "ansible fresh");
        af = af.min(t);
        let (t, changes) = ansible_run(&project);
        assert_eq!(changes, 0, "ansible re-run");
        ar = ar.min(t);
        // Both did the same work: after Ansible, kforge finds every byte and mode already right (not timed).
        assert_eq!(kforge_run(&targets, &files).1, 0, "ansible wrote what kforge writes");
    }
    println!("file-and-command steps on 5 hosts ({per_host:?} files per host, 4 commands each), best of 3:");
    println!("  kforge : fresh {kf:.2}s, no-change re-run {kr:.2}s");
    println!("  ansible: fresh {af:.2}s, no-change re-run {ar:.2}s");
    println!(
        "  kforge / ansible: fresh {:.2}, re-run {:.2} (target <= 0.5)",
        kf / af,
        kr / ar
    );
}
