//! `kforge push image` against a real registry (Debian's docker-registry), read back with skopeo: OCI layouts,
//! docker-archives, a Docker daemon, multi-platform indexes, skipped and mounted blobs, cut connections, corrupt
//! sources, token auth, and the ECR path (repository settings and token from moto, the registry endpoint overridden).

use std::path::Path;
use std::process::Command;

use crate::support::registry::{
    Cutter, Dockerd, OCI_INDEX, OCI_MANIFEST, Registry, TokenGate, add_image, inspect, layout, layout_blobs, noise,
    raw_manifest, sha256, skopeo, tar_layer, write_index,
};
use crate::support::{Outcome, REGION, TestEnv, s};

/// kforge with a private HOME (so its caches are the test's) and no AWS endpoint: registry-only pushes.
fn kforge(home: &Path, args: &[&str]) -> Outcome {
    kforge_with(home, &[], args)
}

/// [`kforge`] with extra environment variables (DOCKER_HOST, passwords).
fn kforge_with(home: &Path, vars: &[(&str, &str)], args: &[&str]) -> Outcome {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kforge"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(vars.iter().copied())
        .args(args);
    let out = c.output().expect("kforge runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(o: &Outcome) -> serde_json::Value {
    assert_eq!(o.code, 0, "push failed:\n{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

#[test]
fn oci_layout_push_reads_back_identically_and_repushes_send_only_new_layers() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let base = tar_layer("base.bin", &noise(1, 300_000));
    let lib = tar_layer("lib.bin", &noise(2, 200_000));
    let app = tar_layer("app.bin", &noise(3, 100_000));
    let img = layout(src.path(), "v1", &[base.clone(), lib.clone(), app]);
    let target = format!("{}/team/app:v1", reg.host());

    let first = json(&kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}:v1", s(src.path())),
            &target,
            "--insecure",
            "-o",
            "json",
        ],
    ));
    assert_eq!(first["digest"], img.manifest_digest.as_str());
    assert_eq!(first["blobsUploaded"], 4);
    // The manifest is stored byte for byte, and skopeo sees the same layers.
    assert_eq!(raw_manifest(&target), img.manifest);
    let (digest, layers) = inspect(&target, None);
    assert_eq!(digest, img.manifest_digest);
    assert_eq!(layers, img.layers);
    // skopeo's copy back to a layout has exactly the source's blobs.
    let back = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:v1", s(back.path())),
    ]);
    assert_eq!(layout_blobs(back.path()), layout_blobs(src.path()));

    // The same image again: nothing sent, nothing re-put.
    let again = json(&kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}", s(src.path())),
            &target,
            "--insecure",
            "-o",
            "json",
        ],
    ));
    assert_eq!(again["bytesSent"], 0);
    assert_eq!(again["blobsPresent"], 4);
    assert_eq!(again["manifestsPushed"], 0);

    // A second image sharing two layers: only its new layer and config travel.
    let src2 = tempfile::tempdir().unwrap();
    let new_layer = tar_layer("app.bin", &noise(4, 150_000));
    let img2 = layout(src2.path(), "v2", &[base, lib, new_layer.clone()]);
    let config2 = std::fs::metadata(src2.path().join("blobs/sha256").join(&img2.config_digest[7..]))
        .unwrap()
        .len();
    let second = json(&kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}:v2", s(src2.path())),
            &format!("{}/team/app:v2", reg.host()),
            "--insecure",
            "-o",
            "json",
        ],
    ));
    assert_eq!(second["blobsPresent"], 2);
    assert_eq!(second["bytesSent"], new_layer.len() as u64 + config2);
    assert_eq!(inspect(&format!("{}/team/app:v2", reg.host()), None).1, img2.layers);

    // To another repository of the same registry, blobs are mounted, not sent.
    let mounted = json(&kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}:v1", s(src.path())),
            &format!("{}/other/app:v1", reg.host()),
            "--insecure",
            "-o",
            "json",
        ],
    ));
    assert_eq!(mounted["blobsMounted"], 4, "{mounted}");
    assert_eq!(mounted["bytesSent"], 0);
    assert_eq!(
        inspect(&format!("{}/other/app:v1", reg.host()), None).0,
        img.manifest_digest
    );
}

#[test]
fn docker_archive_push_keeps_the_layer_digests() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let img = layout(
        src.path(),
        "v1",
        &[tar_layer("a", &noise(5, 50_000)), tar_layer("b", &noise(6, 70_000))],
    );
    let archive = home.path().join("app.tar");
    // skopeo writes a classic `docker save` archive (manifest.json, uncompressed layers).
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", s(src.path())),
        &format!("docker-archive:{}:team/app:v1", s(&archive)),
    ]);
    let target = format!("{}/archived:v1", reg.host());
    let out = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("docker-archive:{}", s(&archive)),
            &target,
            "--insecure",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed = out.stdout.trim();
    let (digest, layers) = inspect(&target, None);
    assert_eq!(printed, digest);
    assert_eq!(layers, img.layers, "layers are pushed as they are in the archive");
    assert_eq!(sha256(&raw_manifest(&target)), digest);

    // Selecting by name works; an unknown name is refused with the names the archive has.
    let wrong = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("docker-archive:{}:team/other:v9", s(&archive)),
            &target,
            "--insecure",
        ],
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("has no image team/other:v9; it has: docker.io/team/app:v1"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn daemon_image_push() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let dockerd = Dockerd::start();
    let diff_ids = dockerd.import("kforge-test/daemon:v3", &[("etc/hello", b"hello from the daemon\n")]);
    let target = format!("{}/daemon:v3", reg.host());
    let out = kforge_with(
        home.path(),
        &[("DOCKER_HOST", &dockerd.host)],
        &["push", "image", "kforge-test/daemon:v3", &target, "--insecure"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (digest, layers) = inspect(&target, None);
    assert_eq!(out.stdout.trim(), digest);
    assert_eq!(layers, diff_ids);
    // The target's tag defaults to the source's.
    let out = kforge_with(
        home.path(),
        &[("DOCKER_HOST", &dockerd.host)],
        &[
            "push",
            "image",
            "docker-daemon:kforge-test/daemon:v3",
            &format!("{}/daemon2", reg.host()),
            "--insecure",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(inspect(&format!("{}/daemon2:v3", reg.host()), None).0, digest);
    // A name the daemon lacks is named.
    let out = kforge_with(
        home.path(),
        &[("DOCKER_HOST", &dockerd.host)],
        &["push", "image", "nothere:1", &target, "--insecure"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("image nothere:1 is not in the Docker daemon"),
        "{}",
        out.stderr
    );
}

#[test]
fn multi_platform_index_is_pushed_whole() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let shared = tar_layer("shared", &noise(7, 40_000));
    let amd = add_image(
        src.path(),
        &[shared.clone(), tar_layer("amd", &noise(8, 10_000))],
        "amd64",
    );
    let arm = add_image(src.path(), &[shared, tar_layer("arm", &noise(9, 10_000))], "arm64");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.manifest_digest, "size": amd.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.manifest_digest, "size": arm.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ]
    }))
    .unwrap();
    let index_digest = sha256(&index);
    std::fs::write(src.path().join("blobs/sha256").join(&index_digest[7..]), &index).unwrap();
    write_index(src.path(), &[(OCI_INDEX, &index_digest, index.len(), "multi")]);

    let target = format!("{}/multi:1", reg.host());
    let report = json(&kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}", s(src.path())),
            &target,
            "--insecure",
            "-o",
            "json",
        ],
    ));
    assert_eq!(report["digest"], index_digest.as_str());
    assert_eq!(report["manifestsPushed"], 3);
    assert_eq!(report["blobsUploaded"], 5, "shared layer once, two layers, two configs");
    assert_eq!(raw_manifest(&target), index);
    for child in [&amd, &arm] {
        let r = format!("{}/multi@{}", reg.host(), child.manifest_digest);
        assert_eq!(raw_manifest(&r), child.manifest);
    }
}

#[test]
fn a_cut_connection_mid_layer_is_retried_and_a_dead_one_fails_naming_the_layer() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let big = tar_layer("big.bin", &noise(10, 3_000_000));
    let big_digest = sha256(&big);
    let img = layout(src.path(), "v1", &[tar_layer("small", b"small"), big]);

    // Two cuts, each more than 1 MB into the big layer's PATCH: the push retries from a new session and succeeds.
    let cutter = Cutter::start(reg.port, 1_000_000, 2);
    let out = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}", s(src.path())),
            &format!("127.0.0.1:{}/flaky:v1", cutter.port),
            "--insecure",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(cutter.cuts.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(
        out.stderr.contains("failed") && out.stderr.contains("retrying"),
        "{}",
        out.stderr
    );
    assert_eq!(
        inspect(&format!("{}/flaky:v1", reg.host()), None).0,
        img.manifest_digest
    );

    // Every connection cut: the error names the layer, and nothing is committed (no manifest, no blob).
    let dead = Cutter::start(reg.port, 1_000_000, usize::MAX);
    let out = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}", s(src.path())),
            &format!("127.0.0.1:{}/broken:v1", dead.port),
            "--insecure",
            "--attempts",
            "2",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("layer {}", &big_digest[..19])) && out.stderr.contains("after 2 of 2 tries"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was committed"), "{}", out.stderr);
    assert_eq!(reg.head("broken/manifests/v1"), 404);
    for blob in [&big_digest, &img.config_digest] {
        assert_eq!(
            reg.head(&format!("broken/blobs/{blob}")),
            404,
            "{blob} must not be committed"
        );
    }
}

#[test]
fn corrupt_sources_fail_naming_the_blob_and_push_nothing() {
    let reg = Registry::start(None);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let good = tar_layer("good", &noise(11, 100_000));
    let bad = tar_layer("bad", &noise(12, 100_000));
    let bad_digest = sha256(&bad);
    let img = layout(src.path(), "v1", &[good.clone(), bad.clone()]);
    // Same size, different bytes: only the digest can tell.
    let mut tampered = bad.clone();
    tampered[2000] ^= 0xff;
    std::fs::write(src.path().join("blobs/sha256").join(&bad_digest[7..]), &tampered).unwrap();
    let out = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("oci:{}", s(src.path())),
            &format!("{}/corrupt:v1", reg.host()),
            "--insecure",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("layer {}", &bad_digest[..19])) && out.stderr.contains("is corrupt"),
        "{}",
        out.stderr
    );
    assert_eq!(reg.head("corrupt/manifests/v1"), 404);
    for blob in [sha256(&good), bad_digest.clone(), img.config_digest.clone()] {
        assert_eq!(
            reg.head(&format!("corrupt/blobs/{blob}")),
            404,
            "{blob} must not be committed"
        );
    }

    // A truncated docker-archive is refused before any request.
    let archive_src = tempfile::tempdir().unwrap();
    layout(archive_src.path(), "v1", &[good, tar_layer("x", &noise(13, 200_000))]);
    let archive = home.path().join("a.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", s(archive_src.path())),
        &format!("docker-archive:{}:a:v1", s(&archive)),
    ]);
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let out = kforge(
        home.path(),
        &[
            "push",
            "image",
            &format!("docker-archive:{}", s(&archive)),
            &format!("{}/trunc:v1", reg.host()),
            "--insecure",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);
    assert_eq!(
        crate::support::registry::http_status(reg.port, "GET", "/v2/trunc/tags/list", None),
        404
    );
}

#[test]
fn token_auth_is_negotiated_from_the_challenge() {
    let reg = Registry::start(None);
    let gate = TokenGate::start(reg.port, "ci", "hunter2");
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let img = layout(src.path(), "v1", &[tar_layer("t", &noise(14, 20_000))]);
    let target = format!("127.0.0.1:{}/secure/app:v1", gate.port);
    let push = |password: &str| {
        kforge_with(
            home.path(),
            &[("KFORGE_REGISTRY_PASSWORD", password)],
            &[
                "push",
                "image",
                &format!("oci:{}", s(src.path())),
                &target,
                "--insecure",
                "--username",
                "ci",
            ],
        )
    };
    let out = push("wrong");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("refused a token") && out.stderr.contains("hint: check the credentials"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "the password is never printed");
    let out = push("hunter2");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        inspect(&format!("{}/secure/app:v1", reg.host()), None).0,
        img.manifest_digest
    );
    // Blobs go as one PATCH each with a Content-Length, never chunked (ECR mishandles chunked uploads).
    let patches = gate.patches.lock().unwrap().clone();
    assert_eq!(patches.len(), 2, "config and layer: {patches:?}");
    for (length, encoding) in &patches {
        assert!(length.is_some() && encoding.is_none(), "{patches:?}");
    }
    assert!(
        gate.scopes
            .lock()
            .unwrap()
            .iter()
            .any(|sc| sc == "repository:secure/app:pull,push"),
        "{:?}",
        gate.scopes.lock().unwrap()
    );
}

#[test]
fn ecr_repository_settings_and_token_auth_against_moto() {
    let env = TestEnv::new();
    // The registry answers only to the credentials inside moto's token for the default account.
    let reg = Registry::start(Some(("AWS", "123456789012-auth-token")));
    let src = tempfile::tempdir().unwrap();
    let img = layout(src.path(), "v1", &[tar_layer("e", &noise(15, 30_000))]);
    let endpoint = format!("http://{}", reg.host());
    let source = format!("oci:{}", s(src.path()));
    let out = env.ok(&[
        "push",
        "image",
        &source,
        "team/app",
        "--registry-endpoint",
        &endpoint,
        "--scan-on-push",
        "--immutable-tags",
        "--keep-images",
        "10",
        "--expire-untagged-days",
        "3",
        "-o",
        "json",
    ]);
    assert!(out.stderr.contains("created ECR repository team/app"), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["digest"], img.manifest_digest.as_str());
    assert!(
        report["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/team/app:v1@{}", img.manifest_digest)),
        "{report}"
    );
    let (digest, _) = inspect(
        &format!("{}/team/app:v1", reg.host()),
        Some("AWS:123456789012-auth-token"),
    );
    assert_eq!(digest, img.manifest_digest);

    let ecr = aws_sdk_ecr::Client::new(&env.sdk(REGION));
    let repo = crate::support::rt()
        .block_on(ecr.describe_repositories().repository_names("team/app").send())
        .unwrap()
        .repositories()[0]
        .clone();
    assert!(repo.image_scanning_configuration().unwrap().scan_on_push());
    assert_eq!(repo.image_tag_mutability().unwrap().as_str(), "IMMUTABLE");
    let policy = crate::support::rt()
        .block_on(ecr.get_lifecycle_policy().repository_name("team/app").send())
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(policy["rules"][0]["selection"]["countNumber"], 3);
    assert_eq!(policy["rules"][1]["selection"]["countNumber"], 10);
    let actions: Vec<String> = env.proxy.calls().into_iter().map(|c| c.action).collect();
    assert!(actions.iter().any(|a| a == "GetAuthorizationToken"), "{actions:?}");

    // Again with tags made mutable: the existing repository is converged, the image is already there.
    env.proxy.clear_calls();
    let out = env.ok(&[
        "push",
        "image",
        &source,
        "team/app",
        "--registry-endpoint",
        &endpoint,
        "--immutable-tags=false",
        "-o",
        "json",
    ]);
    assert!(
        out.stderr
            .contains("updated ECR repository team/app: immutable tags: false"),
        "{}",
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["bytesSent"], 0);
    let actions: Vec<String> = env.proxy.calls().into_iter().map(|c| c.action).collect();
    assert!(!actions.iter().any(|a| a == "CreateRepository"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "PutImageTagMutability"), "{actions:?}");
}

#[test]
fn bad_references_and_sources_are_refused_before_any_call() {
    let env = TestEnv::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &["push", "image", "oci:/nonexistent/layout", "app:v1"],
            "is not an OCI image layout",
        ),
        (
            &["push", "image", "oci:/tmp", "Bad_Repo:v1"],
            "is not a valid repository name",
        ),
        (
            &["push", "image", "docker://x/y", "app:v1"],
            "the `docker:` transport is not supported",
        ),
        (
            &["push", "image", "oci:/tmp", "reg.example.com/app@sha256:00"],
            "a digest cannot be pushed to",
        ),
    ];
    for (args, expected) in cases {
        let o = env.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            o.stderr
        );
    }
    assert!(env.proxy.calls().is_empty(), "{:?}", env.proxy.calls());
}
