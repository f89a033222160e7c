//! The EKS security phase against moto: the control plane's and the nodes' IAM roles, found by name and tag,
//! converged (trust, managed policies, tags), refused when a foreign role holds the name, replaced by roles named
//! in the spec, and deleted without local state.

use std::collections::BTreeSet;

use crate::support::{TestEnv, example, rt, s, write_spec};

fn iam() -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(crate::support::moto::shared().url())
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build(),
    )
}

fn policies(role: &str) -> BTreeSet<String> {
    rt().block_on(async {
        let out = iam()
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        out.attached_policies()
            .iter()
            .map(|p| p.policy_name().unwrap().to_string())
            .collect()
    })
}

fn roles_under(path: &str) -> Vec<String> {
    rt().block_on(async {
        let out = iam().list_roles().path_prefix(path).send().await.unwrap();
        out.roles().iter().map(|r| r.role_name().to_string()).collect()
    })
}

const PHASES: &str = "network,security";

#[test]
fn roles_are_created_with_trust_policies_and_tags_and_reapply_is_quiet() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--phase", PHASES]);

    rt().block_on(async {
        for (name, service) in [
            ("kforge-eks-minimal-cluster", "eks.amazonaws.com"),
            ("kforge-eks-minimal-node", "ec2.amazonaws.com"),
        ] {
            let role = iam().get_role().role_name(name).send().await.unwrap().role.unwrap();
            assert_eq!(role.path(), "/kforge/eks-minimal/");
            let trust = role.assume_role_policy_document().unwrap();
            assert!(trust.contains(service), "{name} trusts {service}: {trust}");
            let tags: std::collections::BTreeMap<_, _> = role
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            assert_eq!(tags["kforge.dev/cluster"], "eks-minimal");
            assert_eq!(tags["kforge.dev/managed-by"], "kforge");
            assert_eq!(tags["team"], "platform", "the spec's tags");
        }
    });
    assert_eq!(
        policies("kforge-eks-minimal-cluster"),
        BTreeSet::from(["AmazonEKSClusterPolicy".to_string()])
    );
    assert_eq!(
        policies("kforge-eks-minimal-node"),
        [
            "AmazonEC2ContainerRegistryReadOnly",
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy"
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>()
    );

    env.proxy.clear_calls();
    let plan = env.run(&["plan", "-f", s(&spec), "--phase", PHASES, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    env.ok(&["apply", "-f", s(&spec), "--phase", PHASES]);
    let mutating: Vec<_> = env
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.action)
        .collect();
    assert!(mutating.is_empty(), "re-apply mutated: {mutating:?}");
}

#[test]
fn policies_changed_by_hand_are_converged() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    env.ok(&["apply", "-f", s(&spec), "--phase", PHASES]);
    rt().block_on(async {
        let c = iam();
        c.detach_role_policy()
            .role_name("kforge-eks-minimal-node")
            .policy_arn("arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy")
            .send()
            .await
            .unwrap();
        c.attach_role_policy()
            .role_name("kforge-eks-minimal-node")
            .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
            .send()
            .await
            .unwrap();
    });
    let plan = env.run(&["plan", "-f", s(&spec), "--phase", PHASES, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("~ role/node (kforge-eks-minimal-node): update in place"),
        "{}",
        plan.stdout
    );
    env.ok(&["apply", "-f", s(&spec), "--phase", PHASES]);
    let got = policies("kforge-eks-minimal-node");
    assert!(
        got.contains("AmazonEKS_CNI_Policy") && !got.contains("AdministratorAccess"),
        "{got:?}"
    );
    let plan = env.run(&["plan", "-f", s(&spec), "--phase", PHASES, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
}

#[test]
fn a_foreign_role_with_the_name_is_refused() {
    let env = TestEnv::new();
    rt().block_on(async {
        iam()
            .create_role()
            .role_name("kforge-eks-minimal-cluster")
            .assume_role_policy_document("{}")
            .send()
            .await
            .unwrap()
    });
    let o = env.run(&["apply", "-f", s(&example("eks-minimal.yaml")), "--phase", PHASES]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("IAM role kforge-eks-minimal-cluster exists but is not kforge's role"),
        "{}",
        o.stderr
    );
    assert!(
        env.proxy.calls().iter().all(|c| !c.is_mutating()),
        "refused while planning, before any change"
    );
}

#[test]
fn roles_named_in_the_spec_are_used_not_created() {
    let env = TestEnv::new();
    let arn = rt().block_on(async {
        let role = iam()
            .create_role()
            .role_name("platform-eks")
            .assume_role_policy_document("{}")
            .send()
            .await
            .unwrap();
        role.role.unwrap().arn().to_string()
    });
    let text = std::fs::read_to_string(example("eks-minimal.yaml")).unwrap();
    let with_role = write_spec(
        env.dir.path(),
        "role.yaml",
        &format!("{text}  iam:\n    clusterRoleArn: {arn}\n"),
    );
    let o = env.ok(&["apply", "-f", s(&with_role), "--phase", PHASES]);
    assert!(o.stdout.contains("kforge-eks-minimal-node"), "{}", o.stdout);
    let mut made = roles_under("/kforge/eks-minimal/");
    made.sort();
    // The example runs a Fargate profile, whose pod execution role kforge makes too.
    assert_eq!(made, ["kforge-eks-minimal-fargate", "kforge-eks-minimal-node"]);

    let missing = arn.replace("platform-eks", "no-such-role");
    let bad = write_spec(
        env.dir.path(),
        "bad.yaml",
        &format!("{text}  iam:\n    clusterRoleArn: {missing}\n"),
    );
    let o = env.run(&["apply", "-f", s(&bad), "--phase", PHASES]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("spec.iam.clusterRoleArn: role"), "{}", o.stderr);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
}

#[test]
fn security_alone_needs_the_network_first_and_delete_needs_no_state() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    let o = env.run(&["apply", "-f", s(&spec), "--phase", "security"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("belongs to the network phase, which has not been applied"),
        "{}",
        o.stderr
    );

    env.ok(&["apply", "-f", s(&spec), "--phase", "network"]);
    env.ok(&["apply", "-f", s(&spec), "--phase", "security"]);
    assert_eq!(
        roles_under("/kforge/eks-minimal/").len(),
        3,
        "cluster, node and Fargate roles"
    );
    std::fs::remove_dir_all(env.state_dir()).unwrap();
    env.ok(&["delete", "cluster", "eks-minimal", "--yes"]);
    assert!(roles_under("/kforge/eks-minimal/").is_empty());
    assert!(env.tagged("eks-minimal", "us-east-1").values().all(|n| *n == 0));
}

/// The most verbose log of a create carries no credential: not the session token (the SDK's signer traces
/// canonical requests, token header included), not the secret key.
#[test]
fn the_most_verbose_log_holds_no_credentials() {
    let env = TestEnv::new();
    let spec = example("eks-minimal.yaml");
    let token = "SESSIONTOKENMARKER0123456789";
    let secret = "SECRETKEYMARKER0123456789";
    let o = env.run_with_env(
        &["apply", "-f", s(&spec), "--phase", "network", "-vvv"],
        &[("AWS_SESSION_TOKEN", token), ("AWS_SECRET_ACCESS_KEY", secret)],
    );
    assert_eq!(o.code, 0, "{}", o.stderr.chars().rev().take(3000).collect::<String>());
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        all.lines().count() > 100,
        "-vvv logs the run: {} lines",
        all.lines().count()
    );
    for (what, needle) in [
        ("the session token", token),
        ("the secret key", secret),
        ("the token header", "x-amz-security-token"),
    ] {
        let at: Vec<&str> = all.lines().filter(|l| l.contains(needle)).take(3).collect();
        assert!(
            at.is_empty(),
            "{what} is in the -vvv log:\n{}",
            at.join("\n").chars().take(3000).collect::<String>()
        );
    }
    env.ok(&["delete", "cluster", "eks-minimal", "--yes"]);
}
