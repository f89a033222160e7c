//! One SSH connection to a bootstrap host (libssh2 through `ssh2`; blocking, so callers run it off the async
//! threads): connect with retries until sshd answers or the host's deadline passes (new machines take a while),
//! verify the host key against what kforge established before the first connection (a printed fingerprint, the
//! spec's public key, or known_hosts; never "accept anything"), log in with the identity file or the ssh-agent,
//! then run guarded commands and upload files that are skipped when the host already has the same bytes. Every
//! error names the host and the step.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, Session};

use crate::providers::hosts::{BootstrapHost, ExpectedHostKey};

/// A failed step on a host, as the user should read it.
#[derive(Debug, thiserror::Error)]
#[error("{host}: {step}: {message}\n  hint: {hint}")]
pub struct SshError {
    pub host: String,
    pub step: String,
    pub message: String,
    pub hint: String,
    /// Worth trying again (sshd not up yet, connection refused or reset).
    pub transient: bool,
}

/// What a command printed and returned.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An authenticated connection.
pub struct Connection {
    pub host: String,
    session: Session,
}

fn err(host: &BootstrapHost, step: &str, message: impl Into<String>, hint: &str, transient: bool) -> SshError {
    SshError {
        host: host.name.clone(),
        step: step.into(),
        message: message.into(),
        hint: hint.into(),
        transient,
    }
}

/// `SHA256:<base64 without padding>` of a host key blob, as `ssh-keygen -l` prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// Checks the key the host presented against what kforge expects of it.
fn verify_host_key(host: &BootstrapHost, session: &Session) -> Result<(), SshError> {
    let step = "host key check";
    let Some((blob, _)) = session.host_key() else {
        return Err(err(
            host,
            step,
            "the server sent no host key",
            "is this an SSH server?",
            false,
        ));
    };
    let presented = fingerprint(blob);
    let mismatch = |expected: String| {
        err(
            host,
            step,
            format!("the host presented key {presented}, but {expected}; refusing to connect"),
            "if the machine was rebuilt, update its host key in the spec (or known_hosts); otherwise someone may be \
             intercepting the connection",
            false,
        )
    };
    match &host.host_key {
        ExpectedHostKey::Fingerprints { sha256 } => {
            if sha256.contains(&presented) {
                Ok(())
            } else {
                Err(mismatch(format!("its console printed {}", sha256.join(", "))))
            }
        }
        ExpectedHostKey::PublicKey { key } => {
            let expected_blob = key
                .split_whitespace()
                .nth(1)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            match expected_blob {
                Some(b) if b == blob => Ok(()),
                Some(b) => Err(mismatch(format!("the spec says {}", fingerprint(&b)))),
                None => Err(err(
                    host,
                    step,
                    "the spec's hostKey is not an OpenSSH public key line",
                    "use the line of /etc/ssh/ssh_host_ed25519_key.pub",
                    false,
                )),
            }
        }
        ExpectedHostKey::KnownHosts => {
            let path = std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".ssh/known_hosts"))
                .unwrap_or_default();
            let mut known = session
                .known_hosts()
                .map_err(|e| err(host, step, e.to_string(), "libssh2 could not read known_hosts", false))?;
            if path.exists() {
                known.read_file(&path, KnownHostFileKind::OpenSSH).map_err(|e| {
                    err(
                        host,
                        step,
                        format!("{}: {e}", path.display()),
                        "fix or remove the broken line",
                        false,
                    )
                })?;
            }
            match known.check_port(&host.address, host.port, blob) {
                CheckResult::Match => Ok(()),
                CheckResult::Mismatch => Err(mismatch(format!(
                    "{} has another key for {}",
                    path.display(),
                    host.address
                ))),
                CheckResult::NotFound | CheckResult::Failure => Err(err(
                    host,
                    step,
                    format!("{} ({presented}) is not in {}", host.address, path.display()),
                    "set the host's hostKey in the spec, or add it to known_hosts after checking it out of band",
                    false,
                )),
            }
        }
        ExpectedHostKey::Unknown { reason } => Err(err(
            host,
            step,
            format!("its host key is not established ({reason})"),
            "kforge never connects to a host whose key it cannot check",
            false,
        )),
    }
}

/// One attempt: TCP, handshake, host key, login.
fn connect_once(host: &BootstrapHost, timeout: Duration) -> Result<Connection, SshError> {
    let addr = (host.address.as_str(), host.port)
        .to_socket_addrs()
        .map_err(|e| {
            err(
                host,
                "connect",
                format!("cannot resolve {}: {e}", host.address),
                "check the host's address",
                false,
            )
        })?
        .next()
        .ok_or_else(|| {
            err(
                host,
                "connect",
                format!("{} has no address", host.address),
                "check the host's address",
                false,
            )
        })?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        err(
            host,
            "connect",
            format!("{addr}: {e}"),
            "is sshd running and port open to kforge (security group, firewall)?",
            true,
        )
    })?;
    let mut session =
        Session::new().map_err(|e| err(host, "connect", e.to_string(), "libssh2 could not start", false))?;
    session.set_timeout(timeout.as_millis() as u32);
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| {
        err(
            host,
            "SSH handshake",
            e.to_string(),
            "sshd may still be starting; kforge retries until the deadline",
            true,
        )
    })?;
    verify_host_key(host, &session)?;
    let login = match &host.identity_file {
        Some(key) => session.userauth_pubkey_file(&host.user, None, key, None),
        None => session.userauth_agent(&host.user),
    };
    if let Err(e) = login {
        let how = match &host.identity_file {
            Some(k) => format!("with {}", k.display()),
            None => "with the ssh-agent's keys".into(),
        };
        return Err(err(
            host,
            "login",
            format!("{} refused {how}: {e}", host.user),
            "check ssh.user and that the key's public half is in the user's authorized_keys",
            false,
        ));
    }
    // Commands may run for minutes (package installs); the deadline is the step's, not the socket's.
    session.set_timeout(0);
    Ok(Connection {
        host: host.name.clone(),
        session,
    })
}

/// Connects, retrying while the host is not reachable yet, until `deadline` passes.
pub fn connect(host: &BootstrapHost, deadline: Duration) -> Result<Connection, SshError> {
    let until = Instant::now() + deadline;
    let mut wait = Duration::from_millis(250);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match connect_once(host, left.clamp(Duration::from_secs(1), Duration::from_secs(10))) {
            Ok(c) => return Ok(c),
            Err(e) if e.transient && Instant::now() + wait < until => {
                tracing::debug!("{e}; retrying in {wait:?}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(mut e) => {
                if e.transient {
                    e.message = format!("{} (gave up after {}s)", e.message, deadline.as_secs());
                }
                return Err(e);
            }
        }
    }
}

/// Quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Connection {
    fn fail(&self, step: &str, message: String, hint: &str) -> SshError {
        SshError {
            host: self.host.clone(),
            step: step.into(),
            message,
            hint: hint.into(),
            transient: false,
        }
    }

    /// Runs `command` through the login shell and returns what it printed and its exit status.
    pub fn run(&self, step: &str, command: &str) -> Result<Output, SshError> {
        let broken = |e: &dyn std::fmt::Display| {
            self.fail(
                step,
                format!("the connection broke: {e}"),
                "re-run; steps are idempotent",
            )
        };
        let mut channel = self.session.channel_session().map_err(|e| broken(&e))?;
        channel.exec(command).map_err(|e| broken(&e))?;
        let mut stdout = String::new();
        channel.read_to_string(&mut stdout).map_err(|e| broken(&e))?;
        let mut stderr = String::new();
        channel.stderr().read_to_string(&mut stderr).map_err(|e| broken(&e))?;
        channel.wait_close().map_err(|e| broken(&e))?;
        let status = channel.exit_status().map_err(|e| broken(&e))?;
        Ok(Output { status, stdout, stderr })
    }

    /// Runs `command`; a non-zero exit is an error naming the step, with the end of what it printed.
    pub fn run_ok(&self, step: &str, command: &str) -> Result<Output, SshError> {
        let out = self.run(step, command)?;
        if out.status != 0 {
            let tail: Vec<&str> = out.stderr.lines().chain(out.stdout.lines()).rev().take(5).collect();
            return Err(self.fail(
                step,
                format!(
                    "exited with {}: {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
                "see the command's output above; fix the cause and re-run (finished steps are skipped)",
            ));
        }
        Ok(out)
    }

    /// Runs `command` unless `check` succeeds (exit 0) first: the guard that makes a step idempotent. Returns
    /// whether `command` ran.
    pub fn run_guarded(&self, step: &str, check: &str, command: &str) -> Result<bool, SshError> {
        if self.run(step, check)?.status == 0 {
            return Ok(false);
        }
        self.run_ok(step, command)?;
        Ok(true)
    }

    /// Puts `bytes` at `path` with `mode` unless the host already has exactly those bytes there (compared by
    /// sha256 on the host); written to a temporary name and renamed, so a broken upload never leaves half a file.
    /// Returns whether it uploaded.
    pub fn upload(&self, step: &str, bytes: &[u8], path: &str, mode: i32) -> Result<bool, SshError> {
        let want = format!("{:x}", Sha256::digest(bytes));
        let check = format!("sha256sum {} 2>/dev/null", shell_quote(path));
        let have = self.run(step, &check)?;
        if have.status == 0 && have.stdout.split_whitespace().next() == Some(want.as_str()) {
            let mode_now = self.run(step, &format!("stat -c %a {}", shell_quote(path)))?;
            if mode_now.stdout.trim() == format!("{mode:o}") {
                return Ok(false);
            }
        }
        let dir = Path::new(path)
            .parent()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_else(|| "/".into());
        self.run_ok(step, &format!("mkdir -p {}", shell_quote(&dir)))?;
        let tmp = format!("{path}.kforge-upload");
        let sftp = self.session.sftp().map_err(|e| {
            self.fail(
                step,
                format!("SFTP is not available: {e}"),
                "enable the sftp subsystem in sshd_config",
            )
        })?;
        {
            let mut file = sftp
                .open_mode(
                    Path::new(&tmp),
                    ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                    mode,
                    ssh2::OpenType::File,
                )
                .map_err(|e| {
                    self.fail(
                        step,
                        format!("cannot write {tmp}: {e}"),
                        "check the user may write there (sudo is not used for uploads)",
                    )
                })?;
            file.write_all(bytes).map_err(|e| {
                self.fail(
                    step,
                    format!("upload of {path} broke off: {e}"),
                    "re-run; the upload starts over",
                )
            })?;
        }
        // The mode again: the umask applies at creation.
        self.run_ok(
            step,
            &format!(
                "chmod {mode:o} {tmp} && mv -f {tmp} {dst}",
                tmp = shell_quote(&tmp),
                dst = shell_quote(path)
            ),
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
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
}
