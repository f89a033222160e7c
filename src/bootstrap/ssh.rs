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

use crate::bootstrap::StepError;
use crate::bootstrap::host::{BootstrapHost, ExpectedHostKey};
use crate::engine::Step;
use crate::engine::wait::Wait;
use crate::shell::shell_quote;

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
    /// Commands go through `sudo -n` (the login user is not root, as on cloud images).
    sudo: bool,
    /// The bastion's session and the thread relaying this connection through it, when there is one.
    _tunnel: Option<Tunnel>,
}

/// A local socket relayed over a `direct-tcpip` channel of the jump host's session (ssh2 has no ProxyJump).
struct Tunnel {
    _jump: Box<Connection>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Writes all of `bytes` to a non-blocking writer, waiting out `WouldBlock`.
fn write_all_polling(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        match w.write(&bytes[off..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens a channel from `jump` to `host` and relays it to a fresh local port; returns the local address.
fn tunnel_through(jump: Connection, host: &BootstrapHost) -> Result<(std::net::SocketAddr, Tunnel), StepError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let step = format!("tunnel via {}", jump.host);
    let channel = jump
        .session
        .channel_direct_tcpip(&host.address, host.port, None)
        .map_err(|e| {
            err(
                host,
                &step,
                format!("the jump host cannot reach {}:{}: {e}", host.address, host.port),
                "sshd may still be starting (kforge retries), or the security group blocks SSH from the bastion",
                true,
            )
        })?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(host, &step, e.to_string(), "kforge needs a local port", false))?;
    let local = listener.local_addr().expect("bound");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let session = jump.session.clone();
    std::thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else { return };
        let mut channel = channel;
        session.set_blocking(false);
        let _ = sock.set_nonblocking(true);
        let mut buf = vec![0u8; 32 * 1024];
        // Polling both ends: a blocking read on either would hold libssh2's session lock.
        while !stopped.load(Ordering::SeqCst) {
            let mut idle = true;
            match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    idle = false;
                    if write_all_polling(&mut channel, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            match channel.read(&mut buf) {
                Ok(0) if channel.eof() => break,
                Ok(0) => {}
                Ok(n) => {
                    idle = false;
                    if write_all_polling(&mut sock, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = channel.close();
    });
    Ok((
        local,
        Tunnel {
            _jump: Box::new(jump),
            stop,
        },
    ))
}

fn err(host: &BootstrapHost, step: &str, message: impl Into<String>, hint: &str, transient: bool) -> StepError {
    StepError {
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
fn verify_host_key(host: &BootstrapHost, session: &Session) -> Result<(), StepError> {
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

/// One attempt: TCP (directly, or through the jump host), handshake, host key, login.
fn connect_once(host: &BootstrapHost, timeout: Duration) -> Result<Connection, StepError> {
    let (addr, tunnel) = match &host.jump {
        Some(jump) => {
            let via = connect_once(jump, timeout)?;
            let (local, tunnel) = tunnel_through(via, host)?;
            (local, Some(tunnel))
        }
        None => (direct_address(host)?, None),
    };
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        err(
            host,
            "connect",
            format!("{addr}: {e}"),
            "is sshd running and port open to kforge (security group, firewall)?",
            true,
        )
    })?;
    // A host that vanishes mid-command (stopped, partitioned) sends no RST: keepalives notice it in ~20 s.
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(5))
            .with_retries(3),
    );
    login(host, tcp, timeout, tunnel)
}

fn direct_address(host: &BootstrapHost) -> Result<std::net::SocketAddr, StepError> {
    (host.address.as_str(), host.port)
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
        })
}

fn login(
    host: &BootstrapHost,
    tcp: TcpStream,
    timeout: Duration,
    tunnel: Option<Tunnel>,
) -> Result<Connection, StepError> {
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
        sudo: host.user != "root",
        _tunnel: tunnel,
    })
}

/// Connects, retrying while the host is not reachable yet, until `deadline` passes.
pub fn connect(host: &BootstrapHost, deadline: Duration) -> Result<Connection, StepError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut last: Option<StepError> = None;
    Wait::new(format!("SSH to {}", host.name), deadline)
        .until_blocking(|| {
            let left = deadline.saturating_sub(started.elapsed());
            match connect_once(host, left.clamp(Duration::from_secs(1), Duration::from_secs(10))) {
                Ok(c) => Ok(Step::Done(c)),
                Err(e) if e.transient => {
                    tracing::debug!("{e}; retrying in {backoff:?}");
                    let after = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    let reason = e.message.clone();
                    last = Some(e);
                    Ok(Step::Retry { after, reason })
                }
                Err(e) => Err(e),
            }
        })
        .map_err(|w| {
            w.or_timed_out(|t| {
                let mut e = last.take().unwrap_or_else(|| StepError {
                    host: host.name.clone(),
                    step: "connect".into(),
                    message: t.reason.clone(),
                    hint: String::new(),
                    transient: true,
                });
                e.message = format!("{} (gave up after {}s)", e.message, deadline.as_secs());
                e
            })
        })
}

impl Connection {
    fn fail(&self, step: &str, message: String, hint: &str) -> StepError {
        StepError {
            host: self.host.clone(),
            step: step.into(),
            message,
            hint: hint.into(),
            transient: false,
        }
    }

    /// Runs `command` through the login shell and returns what it printed and its exit status.
    pub fn run(&self, step: &str, command: &str) -> Result<Output, StepError> {
        let (status, stdout, stderr) =
            self.exec(step, command, "the connection broke", "re-run; steps are idempotent")?;
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
        })
    }

    /// The bytes of `path` on the host, read as root (through sudo where the login needs it) and streamed over
    /// the channel, so a file only root may read (an etcd snapshot) comes back without a copy anyone else could.
    pub fn read_file(&self, step: &str, path: &str) -> Result<Vec<u8>, StepError> {
        let (status, bytes, stderr) = self.exec(
            step,
            &format!("cat {}", shell_quote(path)),
            &format!("reading {path} broke off"),
            "re-run; nothing was changed",
        )?;
        if status != 0 {
            return Err(self.fail(
                step,
                format!("cannot read {path}: {}", stderr.trim()),
                "check that the file exists on the host",
            ));
        }
        Ok(bytes)
    }

    /// Runs `command` on a channel of its own (through `sudo -n` when the login needs it): exit status, stdout's
    /// bytes, stderr. A broken channel is `broken: <cause>` with `hint`.
    fn exec(&self, step: &str, command: &str, broken: &str, hint: &str) -> Result<(i32, Vec<u8>, String), StepError> {
        let broken = |e: &dyn std::fmt::Display| self.fail(step, format!("{broken}: {e}"), hint);
        let mut channel = self.session.channel_session().map_err(|e| broken(&e))?;
        let command = if self.sudo {
            format!("sudo -n sh -c {}", shell_quote(command))
        } else {
            command.to_string()
        };
        channel.exec(&command).map_err(|e| broken(&e))?;
        let mut stdout = Vec::new();
        channel.read_to_end(&mut stdout).map_err(|e| broken(&e))?;
        let mut stderr = String::new();
        channel.stderr().read_to_string(&mut stderr).map_err(|e| broken(&e))?;
        channel.wait_close().map_err(|e| broken(&e))?;
        let status = channel.exit_status().map_err(|e| broken(&e))?;
        Ok((status, stdout, stderr))
    }

    /// Runs `command`; a non-zero exit is an error naming the step, with the end of what it printed.
    pub fn run_ok(&self, step: &str, command: &str) -> Result<Output, StepError> {
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
    pub fn run_guarded(&self, step: &str, check: &str, command: &str) -> Result<bool, StepError> {
        if self.run(step, check)?.status == 0 {
            return Ok(false);
        }
        self.run_ok(step, command)?;
        Ok(true)
    }

    /// Puts `bytes` at `path` with `mode` unless the host already has exactly those bytes there (compared by
    /// sha256 on the host); written to a temporary name and renamed, so a broken upload never leaves half a file.
    /// Returns whether it uploaded.
    pub fn upload(&self, step: &str, bytes: &[u8], path: &str, mode: i32) -> Result<bool, StepError> {
        Ok(!self
            .sync_files(
                step,
                &[FileSpec {
                    path: path.into(),
                    bytes: bytes.to_vec(),
                    mode,
                }],
            )?
            .is_empty())
    }

    /// The files of `files` whose bytes or mode differ on the host (one round trip; nothing is changed).
    pub fn stale_files<'a>(&self, step: &str, files: &'a [FileSpec]) -> Result<Vec<&'a FileSpec>, StepError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let probe: Vec<String> = files
            .iter()
            .map(|f| {
                let p = shell_quote(&f.path);
                format!("echo \"$(sha256sum {p} 2>/dev/null | cut -c1-64) $(stat -c %a {p} 2>/dev/null)\"")
            })
            .collect();
        let have = self.run_ok(step, &probe.join("\n"))?;
        let lines: Vec<&str> = have.stdout.lines().collect();
        Ok(files
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                let want = format!("{:x} {:o}", Sha256::digest(&f.bytes), f.mode);
                lines.get(*i).map(|l| l.trim()) != Some(want.as_str())
            })
            .map(|(_, f)| f)
            .collect())
    }

    /// Puts every file whose bytes or mode differ on the host, in three round trips whatever their number: one
    /// command reads every file's sha256 and mode, one SFTP session stages the changed ones (as the login user,
    /// in a private directory), one command installs each under a temporary name and renames it into place.
    /// Returns the paths it wrote.
    pub fn sync_files(&self, step: &str, files: &[FileSpec]) -> Result<Vec<String>, StepError> {
        let changed = self.stale_files(step, files)?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        // The staging directory belongs to the login user (SFTP writes as that user), and nobody else can read it.
        let staging = format!("/var/tmp/kforge-staging-{}", std::process::id());
        self.run_ok(
            step,
            &format!(
                "rm -rf {d} && mkdir -m 0700 {d} && chown \"${{SUDO_USER:-$(id -un)}}\" {d}",
                d = staging
            ),
        )?;
        let sftp = self.session.sftp().map_err(|e| {
            self.fail(
                step,
                format!("SFTP is not available: {e}"),
                "enable the sftp subsystem in sshd_config",
            )
        })?;
        let mut install = Vec::new();
        for (i, f) in changed.iter().enumerate() {
            let staged = format!("{staging}/{i}");
            let mut file = sftp
                .open_mode(
                    Path::new(&staged),
                    ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                    0o600,
                    ssh2::OpenType::File,
                )
                .map_err(|e| {
                    self.fail(
                        step,
                        format!("cannot write {staged}: {e}"),
                        "check free space in /var/tmp",
                    )
                })?;
            file.write_all(&f.bytes).map_err(|e| {
                self.fail(
                    step,
                    format!("upload of {} broke off: {e}", f.path),
                    "re-run; the upload starts over",
                )
            })?;
            let dst = shell_quote(&f.path);
            install.push(format!(
                "mkdir -p \"$(dirname {dst})\" && install -o root -g root -m {mode:o} {staged} {dst}.kforge-new && mv -f {dst}.kforge-new {dst}",
                mode = f.mode
            ));
        }
        drop(sftp);
        install.push(format!("rm -rf {staging}"));
        self.run_ok(step, &format!("set -e\n{}", install.join("\n")))?;
        Ok(changed.iter().map(|f| f.path.clone()).collect())
    }
}

/// A file to put on a host.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: i32,
}

#[cfg(test)]
mod tests;
