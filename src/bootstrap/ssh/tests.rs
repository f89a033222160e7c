use super::*;
use crate::spec::HostRole;
use std::process::{Child, Command, Stdio};

/// A real sshd on a free port, with its own host key and an authorized client key; killed on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    host_pub: String,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for (name, file) in [("host", "host_key"), ("client", "client_key")] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(p.join(file))
                .status()
                .unwrap();
            assert!(status.success());
        }
        std::fs::copy(p.join("client_key.pub"), p.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nAllowUsers {user}\n\
             Subsystem sftp internal-sftp\n",
            d = p.display()
        );
        std::fs::write(p.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(p.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd runs (scripts/test installs openssh-server)");
        let host_pub = std::fs::read_to_string(p.join("host_key.pub")).unwrap();
        Sshd {
            dir,
            port,
            child,
            host_pub,
        }
    }

    fn host(&self, key: ExpectedHostKey) -> BootstrapHost {
        BootstrapHost {
            name: "m1".into(),
            role: HostRole::Master,
            address: "127.0.0.1".into(),
            port: self.port,
            user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
            identity_file: Some(self.dir.path().join("client_key")),
            host_key: key,
            jump: None,
            instance_id: None,
            zone: None,
            group: None,
            labels: Default::default(),
            taints: Vec::new(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn verified_connection_guarded_steps_and_idempotent_uploads() {
    let sshd = Sshd::start();
    let host = sshd.host(ExpectedHostKey::PublicKey {
        key: sshd.host_pub.clone(),
    });
    // sshd may not listen yet: connect retries.
    let conn = connect(&host, Duration::from_secs(20)).unwrap();
    let out = conn.run_ok("echo", "echo hello; echo oops >&2").unwrap();
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.status),
        ("hello\n", "oops\n", 0)
    );

    let e = conn
        .run_ok("install etcd", "echo 'E: Unable to locate package' >&2; exit 100")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("m1: install etcd: exited with 100: E: Unable to locate package"),
        "{e}"
    );

    let marker = sshd.dir.path().join("ran");
    let m = shell_quote(&marker.to_string_lossy());
    assert!(
        conn.run_guarded("mark", &format!("test -e {m}"), &format!("touch {m}"))
            .unwrap()
    );
    assert!(
        !conn
            .run_guarded("mark", &format!("test -e {m}"), &format!("touch {m}"))
            .unwrap()
    );

    let target = sshd.dir.path().join("etc/kforge/pki/ca.key");
    let t = target.to_string_lossy().to_string();
    assert!(conn.upload("pki", b"secret bytes", &t, 0o600).unwrap());
    assert_eq!(std::fs::read(&target).unwrap(), b"secret bytes");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        !conn.upload("pki", b"secret bytes", &t, 0o600).unwrap(),
        "same bytes: nothing sent"
    );
    assert!(conn.upload("pki", b"new bytes", &t, 0o600).unwrap());
    assert_eq!(std::fs::read(&target).unwrap(), b"new bytes");
    assert!(!sshd.dir.path().join("etc/kforge/pki/ca.key.kforge-upload").exists());

    // The fingerprint form (from a console) works too.
    let blob = base64::engine::general_purpose::STANDARD
        .decode(sshd.host_pub.split_whitespace().nth(1).unwrap())
        .unwrap();
    let by_print = sshd.host(ExpectedHostKey::Fingerprints {
        sha256: vec![fingerprint(&blob)],
    });
    connect(&by_print, Duration::from_secs(5)).unwrap();
}

/// Through a jump host (here the same sshd, which forwards to itself): the inner connection's key is checked,
/// commands and a batch upload work over the relayed channel.
#[test]
fn a_host_behind_a_jump_host_is_reached_through_a_relayed_channel() {
    let sshd = Sshd::start();
    let key = ExpectedHostKey::PublicKey {
        key: sshd.host_pub.clone(),
    };
    let mut host = sshd.host(key.clone());
    let mut bastion = sshd.host(key);
    bastion.name = "bastion".into();
    host.jump = Some(Box::new(bastion));
    let conn = connect(&host, Duration::from_secs(20)).unwrap();
    let out = conn.run_ok("probe", "echo relayed").unwrap();
    assert_eq!(out.stdout.trim(), "relayed");
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<FileSpec> = (0..3)
        .map(|i| FileSpec {
            path: dir.path().join(format!("f{i}")).display().to_string(),
            bytes: vec![b'x'; 100_000 + i],
            mode: 0o640,
        })
        .collect();
    assert_eq!(conn.sync_files("files", &files).unwrap().len(), 3);
    assert!(
        conn.sync_files("files", &files).unwrap().is_empty(),
        "unchanged files are not sent again"
    );
    assert_eq!(std::fs::read(dir.path().join("f2")).unwrap().len(), 100_002);
}

#[test]
fn a_host_with_another_key_is_refused_and_so_is_an_unknown_one() {
    let sshd = Sshd::start();
    let other = sshd.host(ExpectedHostKey::Fingerprints {
        sha256: vec!["SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()],
    });
    let e = connect(&other, Duration::from_secs(20))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.starts_with("m1: host key check: the host presented key SHA256:"),
        "{e}"
    );
    assert!(
        e.contains("refusing to connect") && e.contains("hint: if the machine was rebuilt"),
        "{e}"
    );
    let unknown = sshd.host(ExpectedHostKey::Unknown {
        reason: "console printed nothing".into(),
    });
    let e = connect(&unknown, Duration::from_secs(5))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("not established (console printed nothing)"), "{e}");
}

#[test]
fn a_host_that_never_answers_fails_at_its_deadline_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sshd = Sshd {
        dir: tempfile::tempdir().unwrap(),
        port,
        child: Command::new("true").spawn().unwrap(),
        host_pub: String::new(),
    };
    let host = sshd.host(ExpectedHostKey::KnownHosts);
    let started = Instant::now();
    let e = connect(&host, Duration::from_secs(2)).err().expect("fails").to_string();
    assert!(
        e.starts_with("m1: connect: 127.0.0.1:") && e.contains("gave up after 2s"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
