//! The real-AWS end-to-end run of a self-built HA cluster: examples/selfbuilt-ha.yaml with the runner's own SSH key
//! and address, created (every phase, bootstrap included), validated, and deleted. It costs money and needs
//! credentials, so it is ignored unless asked for: `KFORGE_E2E_AWS=1 KFORGE_E2E_CIDR=<your IP>/32 cargo test
//! --test integration e2e_aws -- --ignored --nocapture` (the AWS SDK's usual credential chain; a fresh key pair
//! is made for the run). The delete runs whatever happened before it.

use std::process::Command;

use crate::support::{example, write_spec};

#[test]
#[ignore = "creates real AWS resources: set KFORGE_E2E_AWS=1 and KFORGE_E2E_CIDR, then run with --ignored"]
fn selfbuilt_ha_on_real_aws_creates_validates_and_deletes() {
    // Asked for (--ignored) but not allowed to spend money: a failure that says so, never a green "pass" that ran
    // nothing.
    assert_eq!(
        std::env::var("KFORGE_E2E_AWS").as_deref(),
        Ok("1"),
        "this test creates real AWS resources: set KFORGE_E2E_AWS=1 and KFORGE_E2E_CIDR to run it"
    );
    let cidr = std::env::var("KFORGE_E2E_CIDR")
        .expect("KFORGE_E2E_CIDR: the address this runner connects from, e.g. 198.51.100.7/32");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kforge-e2e", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let text = std::fs::read_to_string(example("selfbuilt-ha.yaml")).unwrap();
    let public_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("publicKey:"))
        .expect("the example pins a public key")
        .to_string();
    let text = text
        .replace(
            &public_line,
            &format!("    publicKey: {}\n    identityFile: id_ed25519", public.trim()),
        )
        .replace("allowedCidrs: [203.0.113.0/24]", &format!("allowedCidrs: [{cidr}]"));
    let spec = write_spec(dir.path(), "selfbuilt-ha.yaml", &text);
    let kforge = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kforge"))
            .env("KFORGE_STATE", dir.path().join("state"))
            .args(args)
            .status()
            .unwrap()
    };
    let created = kforge(&["create", "cluster", "-f", spec.to_str().unwrap()]);
    let validated = created
        .success()
        .then(|| kforge(&["validate", "cluster", "selfbuilt-ha"]));
    let deleted = kforge(&["delete", "cluster", "selfbuilt-ha", "--yes"]);
    assert!(created.success(), "create failed (resources deleted: {deleted})");
    assert!(validated.is_some_and(|v| v.success()), "validate failed");
    assert!(
        deleted.success(),
        "delete failed: check the account for leftovers tagged kforge.dev/cluster=selfbuilt-ha"
    );
    assert!(
        kforge(&["delete", "cluster", "selfbuilt-ha", "--yes"]).success(),
        "a second delete exits 0"
    );
}
