//! One moto server per test binary, started on a free port through `scripts/moto_sidecar.py`; it exits when this
//! process does (its stdin is our pipe), even if the tests are killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub struct Moto {
    pub port: u16,
    // Held so the sidecar's stdin stays open for the life of the test binary.
    _child: Child,
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets every resource (all accounts and regions).
    pub fn reset(&self) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("moto answers");
        conn.write_all(b"POST /moto-api/reset HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            .expect("send reset");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).expect("read reset reply");
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "moto reset: {reply}"
        );
    }
}

/// The Python that has moto: `KFORGE_PYTHON` (set by scripts/test to its venv), else python3 on PATH.
fn python() -> String {
    std::env::var("KFORGE_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub fn shared() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto_sidecar.py");
        let mut child = Command::new(python())
            .arg(script)
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            // ECS services report this many running tasks (moto has no scheduler): deployments of up to 2 complete.
            .env("MOTO_ECS_SERVICE_RUNNING", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto via {}: {e}; run scripts/test, which installs it",
                    python()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("moto prints its port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "moto did not start (got {line:?}); is moto[server] installed for {}?",
                python()
            )
        });
        Moto { port, _child: child }
    })
}
