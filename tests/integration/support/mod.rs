//! Test support: the shared moto server and proxy, one test at a time against them (moto reset in between), a
//! private state dir per test, and helpers to run the real `kforge` binary and inspect what it left in "AWS".

pub mod hosts;
pub mod moto;
pub mod proxy;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use aws_sdk_ec2::types::{Filter, NatGatewayState};
use tempfile::TempDir;

pub use proxy::Proxy;

pub const REGION: &str = "us-east-1";

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn shared_proxy() -> &'static Arc<Proxy> {
    static PROXY: OnceLock<Arc<Proxy>> = OnceLock::new();
    PROXY.get_or_init(|| Proxy::start(rt(), moto::shared().url()))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// One test's view of the testbed. Holding it serialises tests that use moto.
pub struct TestEnv {
    _serial: MutexGuard<'static, ()>,
    pub dir: TempDir,
    pub proxy: &'static Arc<Proxy>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        moto::shared().reset();
        let proxy = shared_proxy();
        proxy.reset();
        TestEnv {
            _serial: serial,
            dir: tempfile::tempdir().unwrap(),
            proxy,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `kforge` pointed at the proxy (through `AWS_ENDPOINT_URL`, as users of emulators set it) with a private state.
    pub fn kforge(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kforge"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", self.proxy.url())
            .env("KFORGE_STATE", self.state_dir());
        c
    }

    /// Runs kforge to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> Outcome {
        let out = self.kforge().args(args).output().expect("kforge runs");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kforge with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Outcome {
        let mut c = self.kforge();
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.args(args).output().expect("kforge runs");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The actions of the mutating AWS calls the proxy saw, in order.
    pub fn mutating(&self) -> Vec<String> {
        self.proxy
            .calls()
            .into_iter()
            .filter(|c| c.is_mutating())
            .map(|c| c.action)
            .collect()
    }

    /// Runs kforge and insists on exit 0.
    pub fn ok(&self, args: &[&str]) -> Outcome {
        let o = self.run(args);
        assert_eq!(o.code, 0, "kforge {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o
    }

    /// For each `(file name, spec text, expected stderr fragments)`: `create cluster` exits 1 and says each fragment;
    /// and no case made any AWS call.
    pub fn assert_create_refused_before_any_call(&self, cases: &[(&str, String, &[&str])]) {
        for (file, text, expected) in cases {
            let path = write_spec(self.dir.path(), file, text);
            let o = self.run(&["create", "cluster", "-f", s(&path)]);
            assert_eq!(o.code, 1, "{file}: {}", o.stderr);
            for e in *expected {
                assert!(o.stderr.contains(e), "{file}: expected {e:?} in:\n{}", o.stderr);
            }
        }
        assert!(
            self.proxy.calls().is_empty(),
            "refused before any AWS call: {:?}",
            self.proxy.calls()
        );
    }

    /// Starts kforge with the proxy holding its first `action` call (after AWS acted on it); returns once held.
    pub fn spawn_until_action_held(&self, action: &str, args: &[&str]) -> std::process::Child {
        self.proxy.hold_action(action);
        self.wait_held(args)
    }

    /// Starts kforge with the proxy holding its `nth` mutating EC2 call (after AWS acted on it), and returns once
    /// that call is held: the child sits mid-run, ready to be killed or to hold its lock.
    pub fn spawn_until_held(&self, nth: usize, args: &[&str]) -> std::process::Child {
        self.proxy.hold_at(nth);
        self.wait_held(args)
    }

    /// Starts kforge with `args` in the background, its output discarded (a run a test will kill).
    pub fn spawn_quiet(&self, args: &[&str]) -> std::process::Child {
        self.kforge()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_held(&self, args: &[&str]) -> std::process::Child {
        let mut child = self.spawn_quiet(args);
        let start = std::time::Instant::now();
        while !self.proxy.holding() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kforge {args:?} ended ({status}) before the held call");
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "the call to hold never came"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    }

    /// An EC2 client straight to moto (not through the proxy, so it does not show in the proxy's record).
    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::new()
                .behavior_version_latest()
                .region(aws_sdk_ec2::config::Region::new(region.to_string()))
                .endpoint_url(moto::shared().url())
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .build(),
        )
    }

    /// SDK configuration straight to moto in `region`, for clients of any service.
    pub fn sdk(&self, region: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(moto::shared().url())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("test", "test", None, None, "test"),
            ))
            .build()
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::new()
                .behavior_version_latest()
                .region(aws_sdk_s3::config::Region::new(REGION))
                .endpoint_url(moto::shared().url())
                .force_path_style(true)
                .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
                .build(),
        )
    }

    /// Answers moto's first-touch cost of each EC2 kind in `region` (it builds defaults lazily, ~1 s after a
    /// reset), directly and not through the proxy, so timings measure kforge and not the emulator's warm-up.
    #[allow(dead_code, reason = "used by benches/network_phase.rs, which shares this module")]
    pub fn warm(&self, region: &str) {
        let ec2 = self.ec2(region);
        rt().block_on(async {
            let _ = tokio::join!(
                ec2.describe_vpcs().send(),
                ec2.describe_subnets().send(),
                ec2.describe_internet_gateways().send(),
                ec2.describe_nat_gateways().send(),
                ec2.describe_addresses().send(),
                ec2.describe_route_tables().send(),
                ec2.describe_security_groups().send(),
            );
        });
    }

    /// Counts, by kind, of what exists tagged with `kforge.dev/cluster=cluster` (live NAT gateways only).
    pub fn tagged(&self, cluster: &str, region: &str) -> BTreeMap<&'static str, usize> {
        let ec2 = self.ec2(region);
        let f = || Filter::builder().name("tag:kforge.dev/cluster").values(cluster).build();
        rt().block_on(async {
            let mut m = BTreeMap::new();
            m.insert(
                "vpc",
                ec2.describe_vpcs().filters(f()).send().await.unwrap().vpcs().len(),
            );
            m.insert(
                "subnet",
                ec2.describe_subnets()
                    .filters(f())
                    .send()
                    .await
                    .unwrap()
                    .subnets()
                    .len(),
            );
            m.insert(
                "internet-gateway",
                ec2.describe_internet_gateways()
                    .filters(f())
                    .send()
                    .await
                    .unwrap()
                    .internet_gateways()
                    .len(),
            );
            let nats = ec2.describe_nat_gateways().filter(f()).send().await.unwrap();
            m.insert("nat-gateway", nats.nat_gateways().iter().filter(live).count());
            m.insert(
                "elastic-ip",
                ec2.describe_addresses()
                    .filters(f())
                    .send()
                    .await
                    .unwrap()
                    .addresses()
                    .len(),
            );
            m.insert(
                "route-table",
                ec2.describe_route_tables()
                    .filters(f())
                    .send()
                    .await
                    .unwrap()
                    .route_tables()
                    .len(),
            );
            m.insert(
                "security-group",
                ec2.describe_security_groups()
                    .filters(f())
                    .send()
                    .await
                    .unwrap()
                    .security_groups()
                    .len(),
            );
            m
        })
    }

    /// Everything that is not moto's default VPC furniture, tagged or not: orphans show up here.
    pub fn all_non_default(&self, region: &str) -> BTreeMap<&'static str, usize> {
        let ec2 = self.ec2(region);
        rt().block_on(async {
            let vpcs = ec2.describe_vpcs().send().await.unwrap();
            let custom: Vec<String> = vpcs
                .vpcs()
                .iter()
                .filter(|v| !v.is_default().unwrap_or(false))
                .filter_map(|v| v.vpc_id().map(str::to_string))
                .collect();
            let in_custom = || {
                Filter::builder()
                    .name("vpc-id")
                    .set_values(Some(custom.clone()))
                    .build()
            };
            let mut m = BTreeMap::new();
            m.insert("vpc", custom.len());
            if custom.is_empty() {
                return m;
            }
            m.insert(
                "subnet",
                ec2.describe_subnets()
                    .filters(in_custom())
                    .send()
                    .await
                    .unwrap()
                    .subnets()
                    .len(),
            );
            let nats = ec2.describe_nat_gateways().send().await.unwrap();
            m.insert("nat-gateway", nats.nat_gateways().iter().filter(live).count());
            m.insert(
                "elastic-ip",
                ec2.describe_addresses().send().await.unwrap().addresses().len(),
            );
            let igws = ec2.describe_internet_gateways().send().await.unwrap();
            m.insert(
                "internet-gateway",
                igws.internet_gateways()
                    .iter()
                    .filter(|g| {
                        g.attachments()
                            .iter()
                            .all(|a| a.vpc_id().is_none_or(|v| custom.iter().any(|c| c == v)))
                    })
                    .filter(|g| {
                        !g.attachments().is_empty() || g.tags().iter().any(|t| t.key() == Some("kforge.dev/cluster"))
                    })
                    .count(),
            );
            let rtbs = ec2.describe_route_tables().filters(in_custom()).send().await.unwrap();
            m.insert(
                "route-table",
                rtbs.route_tables()
                    .iter()
                    .filter(|t| !t.associations().iter().any(|a| a.main().unwrap_or(false)))
                    .count(),
            );
            m
        })
    }
}

/// A NAT gateway that exists or is coming (deleted and failed ones linger in listings).
fn live(n: &&aws_sdk_ec2::types::NatGateway) -> bool {
    matches!(n.state(), Some(NatGatewayState::Available | NatGatewayState::Pending))
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Writes `text` as a spec file in `dir` and returns its path.
pub fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
