//! The command line without the cloud: spec errors, examples, defaults, schema, completion, help, exit codes.

use crate::support::{TestEnv, example, repo, s, write_spec};

const HEAD: &str = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  provider: eks\n  region: us-east-1\n";

/// Each malformed spec: exit 1, the expected location or field path and a hint on stderr, and never a panic.
#[test]
fn malformed_specs_are_reported_with_position_or_path() {
    let env = TestEnv::new();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "bad-yaml.yaml",
            HEAD.replace("region: us-east-1", "region: us-east-1: oops"),
            &[
                "bad-yaml.yaml:7:20: mapping values are not allowed",
                "hint: fix the YAML syntax",
            ],
        ),
        (
            "wrong-type.yaml",
            format!("{HEAD}  nodeGroups:\n    - name: a\n      minSize: lots\n"),
            &[
                "wrong-type.yaml:10:16: spec.nodeGroups[0].minSize: invalid type",
                "hint:",
            ],
        ),
        (
            "unknown-field.yaml",
            format!("{HEAD}  network:\n    vpcCIDR: 10.0.0.0/16\n"),
            &[
                "unknown-field.yaml:9:5: spec.network: unknown field `vpcCIDR`",
                "kforge schema",
            ],
        ),
        (
            "bad-cidr.yaml",
            format!("{HEAD}  network:\n    vpcCidr: 10.0.0.0/33\n"),
            &[
                "spec.network.vpcCidr: `10.0.0.0/33` is not an IPv4 CIDR",
                "hint: write it as ADDRESS/PREFIX",
            ],
        ),
        (
            "outside.yaml",
            format!(
                "{HEAD}  network:\n    zones: [us-east-1a, us-east-1b]\n    topology: public\n    subnets:\n      - {{zone: us-east-1a, type: public, cidr: 192.168.0.0/24}}\n      - {{zone: us-east-1b, type: public, cidr: 10.0.0.0/24}}\n"
            ),
            &["spec.network.subnets[0].cidr: 192.168.0.0/24 is outside the VPC 10.0.0.0/16"],
        ),
        (
            "min-max.yaml",
            format!("{HEAD}  nodeGroups:\n    - {{name: a, minSize: 5, maxSize: 2}}\n"),
            &[
                "spec.nodeGroups[0].minSize: minSize 5 is above maxSize 2",
                "hint: make minSize <= maxSize",
            ],
        ),
        (
            "version.yaml",
            format!("{HEAD}  kubernetesVersion: '1.19'\n"),
            &[
                "spec.kubernetesVersion: version `1.19` is not supported",
                "hint: use one of",
            ],
        ),
        ("empty.yaml", String::new(), &["empty.yaml", "hint:"]),
    ];
    for (name, text, expected) in cases {
        let path = write_spec(env.dir.path(), name, text);
        let o = env.run(&["validate", "spec", "-f", s(&path)]);
        assert_eq!(o.code, 1, "{name}: {}", o.stderr);
        for e in *expected {
            assert!(o.stderr.contains(e), "{name}: expected {e:?} in:\n{}", o.stderr);
        }
        assert!(!o.stderr.contains("panicked"), "{name}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{name}: nothing on stdout, got {}", o.stdout);
    }
    assert!(env.proxy.calls().is_empty(), "validation never calls AWS");
}

#[test]
fn every_example_validates() {
    let env = TestEnv::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let o = env.run(&["validate", "spec", "-f", s(&path)]);
            assert_eq!(o.code, 0, "{}: {}", path.display(), o.stderr);
            seen += 1;
        }
    }
    assert!(seen >= 4, "examples/ holds the documented examples");
}

#[test]
fn dry_run_prints_the_defaulted_spec_which_validates_again() {
    let env = TestEnv::new();
    let spec = write_spec(env.dir.path(), "min.yaml", HEAD);
    let o = env.ok(&["create", "cluster", "-f", s(&spec), "--dry-run", "-o", "yaml"]);
    for want in [
        "natGateways: single",
        "vpcCidr: 10.0.0.0/16",
        "cidr: 10.0.0.0/19",
        "name: ng-1",
        "kubernetesVersion:",
    ] {
        assert!(o.stdout.contains(want), "missing {want:?} in\n{}", o.stdout);
    }
    let again = write_spec(env.dir.path(), "defaulted.yaml", &o.stdout);
    let o2 = env.ok(&["create", "cluster", "-f", s(&again), "--dry-run", "-o", "yaml"]);
    assert_eq!(
        o.stdout, o2.stdout,
        "defaults are applied once: the defaulted spec is a fixed point"
    );
    assert!(env.proxy.calls().is_empty(), "--dry-run calls nothing");
}

#[test]
fn a_phase_the_provider_lacks_is_refused_before_any_cloud_call() {
    let env = TestEnv::new();
    let o = env.run(&[
        "create",
        "cluster",
        "-f",
        s(&example("eks-minimal.yaml")),
        "--phase",
        "bootstrap",
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("provider eks has no bootstrap phase"), "{}", o.stderr);
    assert!(
        o.stderr.contains("its phases are network, security, cluster"),
        "{}",
        o.stderr
    );
    assert!(
        env.proxy.calls().is_empty(),
        "refused before touching AWS: {:?}",
        env.proxy.calls()
    );
}

#[test]
fn schema_is_json_schema_of_the_spec() {
    let env = TestEnv::new();
    let o = env.ok(&["schema"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["title"], "ClusterSpec");
    assert!(
        v["$defs"]["NetworkSpec"]["properties"]["natGateways"].is_object(),
        "{v}"
    );
    assert_eq!(
        v["additionalProperties"], false,
        "unknown fields are rejected by the schema too"
    );
}

#[test]
fn completion_and_usage_errors() {
    let env = TestEnv::new();
    let o = env.ok(&["completion", "bash"]);
    assert!(
        o.stdout.contains("_kforge()"),
        "{}",
        &o.stdout[..200.min(o.stdout.len())]
    );
    // A reader that stops early (`| head -1`) is no failure and no panic.
    let mut child = env
        .kforge()
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");
    let o = env.run(&["plan"]);
    assert_eq!(o.code, 64, "usage errors have their own code: {}", o.stderr);
    let o = env.run(&["delete", "cluster"]);
    assert_eq!(o.code, 64, "{}", o.stderr);
}

#[test]
fn help_text() {
    let env = TestEnv::new();
    insta::assert_snapshot!("help", env.ok(&["--help"]).stdout);
    insta::assert_snapshot!("delete_cluster_help", env.ok(&["delete", "cluster", "--help"]).stdout);
}

/// What `plan` prints for a new self-built cluster against moto, as a snapshot: a change to the plan's wording or
/// to what a spec turns into shows up as a reviewed diff.
#[test]
fn plan_of_a_new_cluster_matches_its_snapshot() {
    let env = TestEnv::new();
    let o = env.ok(&[
        "plan",
        "-f",
        s(&example("selfbuilt-ha.yaml")),
        "--phase",
        "network,security,cluster",
    ]);
    insta::assert_snapshot!("plan_selfbuilt_ha", o.stdout);
    // And of a change to a cluster's network that exists: the attributes that move, resource by resource.
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&example("selfbuilt-ha.yaml")),
        "--phase",
        "network",
    ]);
    let text = std::fs::read_to_string(example("selfbuilt-ha.yaml"))
        .unwrap()
        .replace("  region: eu-west-1\n", "  region: eu-west-1\n  tags: {team: ml}\n");
    let changed = write_spec(env.dir.path(), "selfbuilt-ha.yaml", &text);
    let o = env.ok(&["plan", "-f", s(&changed), "--phase", "network"]);
    // The cloud ids moto made are new each run: `~ vpc (vpc-0123...): update` is kept as `~ vpc (<id>): update`.
    let redacted: Vec<String> = o
        .stdout
        .lines()
        .map(|line| match (line.find(" ("), line.find("): ")) {
            (Some(a), Some(b)) if a < b => format!("{} (<id>{}", &line[..a], &line[b..]),
            _ => line.to_string(),
        })
        .collect();
    insta::assert_snapshot!("plan_selfbuilt_ha_tag_change", redacted.join("\n"));
}

#[test]
fn token_is_an_exec_credential_with_a_presigned_sts_url() {
    use base64::Engine;
    let env = TestEnv::new();
    let o = env.ok(&["token", "--cluster", "ml-gpu", "--region", "us-west-2"]);
    let cred: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    assert_eq!(cred["apiVersion"], "client.authentication.k8s.io/v1beta1");
    let token = cred["status"]["token"].as_str().unwrap();
    let body = token.strip_prefix("k8s-aws-v1.").expect("EKS token prefix");
    let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    assert!(
        url.starts_with("https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"),
        "{url}"
    );
    let query: std::collections::BTreeMap<&str, &str> = url
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert!(
        query["X-Amz-Credential"].starts_with("test%2F")
            && query["X-Amz-Credential"].ends_with("%2Fus-west-2%2Fsts%2Faws4_request")
    );
    assert!(query["X-Amz-Expires"].parse::<u32>().unwrap() <= 60);
    assert_eq!(
        query["X-Amz-SignedHeaders"], "host%3Bx-k8s-aws-id",
        "the cluster header is signed"
    );
    assert_eq!(query["X-Amz-Signature"].len(), 64);
    let expires = humantime::parse_rfc3339(cred["status"]["expirationTimestamp"].as_str().unwrap()).unwrap();
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left <= std::time::Duration::from_secs(15 * 60), "{left:?}");
    assert!(env.proxy.calls().is_empty(), "signing is local: no AWS call");
}

/// Self-built (provider ec2) input kforge cannot honour is refused with a field path and a hint before any call.
#[test]
fn bad_selfbuilt_input_is_refused_before_any_call() {
    let env = TestEnv::new();
    let head = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  provider: ec2\n  region: us-east-1\n";
    let sized = "  nodeGroups:\n    - {name: w, desiredSize: 2}\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "even.yaml",
            format!("{head}  controlPlane: {{count: 2}}\n{sized}"),
            &[
                "spec.controlPlane.count: 2 masters cannot keep an etcd quorum well",
                "hint: use 1, 3 or 5",
            ],
        ),
        (
            "zones.yaml",
            format!("{head}  network: {{zones: [us-east-1a, eu-west-1b]}}\n{sized}"),
            &["spec.network.zones", "eu-west-1b", "hint:"],
        ),
        (
            "unsized.yaml",
            format!("{head}  nodeGroups:\n    - {{name: w}}\n"),
            &[
                "spec.nodeGroups[0]: the instance group has no size",
                "hint: set desiredSize",
            ],
        ),
    ];
    env.assert_create_refused_before_any_call(cases);
}

/// `get assets` lists what a mirror must hold, from the pinned manifest; versions without one are refused.
#[test]
fn get_assets_lists_every_file_with_its_digest_and_mirror_url() {
    let env = TestEnv::new();
    for (version, release) in [("1.33", "v1.33.5"), ("1.34", "v1.34.3"), ("1.35", "v1.35.4")] {
        let o = env.ok(&[
            "get",
            "assets",
            "--version",
            version,
            "--mirror",
            "http://mirror.internal/k",
            "-o",
            "json",
        ]);
        let listing: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let list = listing["files"].as_array().unwrap();
        assert_eq!(list.len(), 12, "{version}: 6 assets x amd64/arm64");
        // The images, for a registry mirror: the sandbox's and every addon's.
        let images = listing["images"].as_object().unwrap();
        assert_eq!(images.len(), 12, "{version}: {images:?}");
        for image in [
            "pause",
            "coredns",
            "aws-cloud-controller-manager",
            "aws-ebs-csi-driver",
            "metrics-server",
        ] {
            assert!(images.contains_key(image), "{version}: {image}");
        }
        let server = list
            .iter()
            .find(|a| a["name"] == "kubernetes-server" && a["upstream"].as_str().unwrap().contains("amd64"))
            .unwrap();
        assert_eq!(
            server["url"],
            format!("http://mirror.internal/k/dl.k8s.io/{release}/kubernetes-server-linux-amd64.tar.gz")
        );
        assert_eq!(server["algorithm"], "sha512");
        assert_eq!(server["version"], release);
    }
    let table = env.ok(&["get", "assets", "--version", "1.34"]).stdout;
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == [
                "flannel-cni-plugin",
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1"
            ]),
        "{table}"
    );
    let o = env.run(&["get", "assets", "--version", "1.29"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("no asset manifest for Kubernetes 1.29"),
        "{}",
        o.stderr
    );
    assert!(env.proxy.calls().is_empty());
}
