//! The bootstrap's pieces on real machines (systemd + sshd containers, see `support::hosts`): kforge's PKI and SSH
//! layer bring up a 3-member etcd cluster over TLS; only kforge's client certificate gets in; a second run changes
//! nothing; keys are private on the hosts; the unit passes `systemd-analyze verify`.

use std::time::Duration;

use kforge::bootstrap::pki::{Member, Pki, PkiRequest};
use kforge::bootstrap::{etcd, ssh};
use kforge::providers::hosts::{BootstrapHost, ExpectedHostKey};
use kforge::spec::HostRole;

use crate::support::hosts::Hosts;

#[test]
fn etcd_cluster_over_tls_with_kforge_pki_on_three_masters() {
    let hosts = Hosts::start(&["m1", "m2", "m3"]);
    let members: Vec<Member> = hosts
        .names
        .iter()
        .zip(&hosts.addresses)
        .map(|(n, a)| Member {
            name: n.clone(),
            address: a.parse().unwrap(),
        })
        .collect();
    let state = tempfile::tempdir().unwrap();
    let request = PkiRequest {
        cluster: "lab".into(),
        masters: members.clone(),
        nodes: hosts.names.clone(),
        api_endpoint: None,
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
    };
    let (pki, _) = Pki::ensure(&state.path().join("pki"), &request).unwrap();
    let connections: Vec<ssh::Connection> = members
        .iter()
        .map(|m| {
            let host = BootstrapHost {
                name: m.name.clone(),
                role: HostRole::Master,
                address: m.address.to_string(),
                port: 22,
                user: "root".into(),
                identity_file: Some(hosts.client_key.clone()),
                host_key: ExpectedHostKey::PublicKey {
                    key: hosts.host_pub.clone(),
                },
                jump: None,
                instance_id: None,
                zone: None,
                group: None,
                labels: Default::default(),
                taints: Vec::new(),
            };
            // New containers: sshd comes up within seconds; connect retries until then.
            ssh::connect(&host, Duration::from_secs(60)).unwrap()
        })
        .collect();

    for (conn, m) in connections.iter().zip(&members) {
        let report = etcd::ensure_member(conn, &pki, "lab", m, &members, "/usr/bin/etcd").unwrap();
        assert!(report.restarted && report.uploaded.len() == 8, "{report:?}");
    }
    let health = etcd::wait_healthy(&connections[0], 3, Duration::from_secs(90)).unwrap();
    for a in &hosts.addresses {
        assert!(health.contains(&format!("https://{a}:2379 is healthy")), "{health}");
    }

    let m1 = &connections[0];
    let other = &hosts.addresses[1];
    // Without a client certificate, or over plain HTTP, etcd does not answer.
    let no_cert = m1
        .run(
            "probe",
            &format!(
                "ETCDCTL_API=3 etcdctl --command-timeout=3s --endpoints=https://{other}:2379 --cacert={}/ca.crt endpoint health",
                etcd::PKI_DIR
            ),
        )
        .unwrap();
    assert_ne!(no_cert.status, 0, "{}{}", no_cert.stdout, no_cert.stderr);
    let plain = m1
        .run(
            "probe",
            &format!("ETCDCTL_API=3 etcdctl --command-timeout=3s --endpoints=http://{other}:2379 endpoint health"),
        )
        .unwrap();
    assert_ne!(plain.status, 0, "{}{}", plain.stdout, plain.stderr);

    let modes = m1
        .run_ok("modes", &format!("stat -c '%n %a' {}/*.key", etcd::PKI_DIR))
        .unwrap();
    for line in modes.stdout.lines() {
        assert!(line.ends_with(" 600"), "{line}");
    }
    let verify = m1
        .run(
            "verify",
            "systemd-analyze verify /etc/systemd/system/kforge-etcd.service",
        )
        .unwrap();
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);

    // A second run: nothing uploaded, nothing restarted, still healthy.
    for (conn, m) in connections.iter().zip(&members) {
        let report = etcd::ensure_member(conn, &pki, "lab", m, &members, "/usr/bin/etcd").unwrap();
        assert!(!report.changed(), "{}: {report:?}", m.name);
    }
    etcd::wait_healthy(&connections[2], 3, Duration::from_secs(30)).unwrap();
}
