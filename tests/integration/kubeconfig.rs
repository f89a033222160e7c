//! `kforge kubeconfig`: an EKS cluster (made in moto directly: kforge's cluster phase is not built yet) merged into
//! a kubeconfig that already has another context, checked by kubectl itself.

use crate::support::{TestEnv, rt, s, write_spec};

fn eks_cluster(name: &str) -> String {
    let eks = aws_sdk_eks::Client::from_conf(
        aws_sdk_eks::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_eks::config::Region::new("us-east-1"))
            .endpoint_url(crate::support::moto::shared().url())
            .credentials_provider(aws_sdk_eks::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build(),
    );
    rt().block_on(async {
        let out = eks
            .create_cluster()
            .name(name)
            .role_arn("arn:aws:iam::123456789012:role/eks")
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigRequest::builder()
                    .subnet_ids("subnet-1")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.cluster.unwrap().arn().unwrap().to_string()
    })
}

const EXISTING: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: kind\n  user: {token: abc}\ncontexts:\n- name: kind\n  context: {cluster: kind, user: kind}\ncurrent-context: kind\n";

#[test]
fn kubeconfig_merges_a_context_that_kubectl_reads() {
    let env = TestEnv::new();
    let arn = eks_cluster("demo");
    let file = write_spec(env.dir.path(), "kubeconfig", EXISTING);
    let o = env.ok(&["kubeconfig", "demo", "--kubeconfig", s(&file)]);
    assert!(o.stdout.contains(&arn), "{}", o.stdout);
    // Twice: the same entries, not duplicates.
    env.ok(&["kubeconfig", "demo", "--kubeconfig", s(&file)]);

    let view = std::process::Command::new("kubectl")
        .args(["config", "view", "--kubeconfig", s(&file), "-o", "json"])
        .output()
        .expect("kubectl is installed (scripts/test installs kubernetes-client)");
    assert!(view.status.success(), "{}", String::from_utf8_lossy(&view.stderr));
    let v: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    // kubectl lists entries sorted by name.
    let mut contexts: Vec<&str> = v["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    contexts.sort();
    assert_eq!(
        contexts,
        [arn.as_str(), "kind"],
        "the earlier context is kept, the new one added once"
    );
    assert_eq!(v["current-context"], arn.as_str());
    let user = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == arn.as_str())
        .unwrap();
    let exec = &user["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert!(exec["command"].as_str().unwrap().ends_with("/kforge"), "{exec}");
    assert_eq!(
        exec["args"],
        serde_json::json!(["token", "--cluster", "demo", "--region", "us-east-1"])
    );
    let cluster = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == arn.as_str())
        .unwrap();
    assert!(
        cluster["cluster"]["server"].as_str().unwrap().starts_with("https://"),
        "{cluster}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn kubeconfig_of_a_missing_cluster_says_so() {
    let env = TestEnv::new();
    let file = env.dir.path().join("kubeconfig");
    let o = env.run(&["kubeconfig", "nope", "--kubeconfig", s(&file)]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("EKS cluster nope not found in us-east-1"),
        "{}",
        o.stderr
    );
    assert!(!file.exists(), "nothing written");
}
