//! `kforge deploy` / `get services` / `delete service` against moto (ECS services report 2 running tasks, set by
//! the test harness): the example deploys everything with its settings, a re-deploy changes nothing, a new image is
//! revision 2, delete and `--purge` leave nothing; bad specs are refused before any call; a `push:` image goes to ECR
//! first and runs by digest.

use crate::support::registry::{Registry, layout, noise, tar_layer};
use crate::support::{REGION, TestEnv, example, rt, s, write_spec};

fn ecs(env: &TestEnv) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&env.sdk(REGION))
}

/// kforge's inline policy of `role`, with IAM's URL encoding undone where the assertions need it.
fn inline_policy(iam: &aws_sdk_iam::Client, role: &str) -> String {
    let policy = rt()
        .block_on(iam.get_role_policy().role_name(role).policy_name("kforge").send())
        .unwrap();
    policy
        .policy_document()
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2A", "*")
}

#[test]
fn deploy_converges_rolls_out_new_images_and_deletes_cleanly() {
    let env = TestEnv::new();
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&example("eks-minimal.yaml")),
        "--phase",
        "network",
        "-q",
    ]);
    let spec = example("ecs-service.yaml");
    let out = env.ok(&["deploy", "-f", s(&spec), "-o", "json"]);
    assert!(
        out.stderr
            .contains("service web in cluster apps is stable on apps-web:1"),
        "{}",
        out.stderr
    );

    let ecs = ecs(&env);
    let cluster = rt()
        .block_on(ecs.describe_clusters().clusters("apps").send())
        .unwrap()
        .clusters()[0]
        .clone();
    let mut providers = cluster.capacity_providers().to_vec();
    providers.sort();
    assert_eq!(providers, ["FARGATE", "FARGATE_SPOT"]);

    let td = rt()
        .block_on(ecs.describe_task_definition().task_definition("apps-web").send())
        .unwrap()
        .task_definition()
        .unwrap()
        .clone();
    assert_eq!(td.revision(), 1);
    assert_eq!((td.cpu(), td.memory()), (Some("512"), Some("1024")));
    assert!(
        td.execution_role_arn()
            .unwrap()
            .ends_with("role/kforge/ecs-apps-web/ecs-apps-web-exec")
    );
    assert!(
        td.task_role_arn()
            .unwrap()
            .ends_with("role/kforge/ecs-apps-web/ecs-apps-web-task")
    );
    let c = &td.container_definitions()[0];
    assert_eq!(c.image(), Some("public.ecr.aws/nginx/nginx:1.27"));
    assert_eq!(c.port_mappings()[0].container_port(), Some(80));
    assert_eq!(c.environment()[0].name(), Some("LOG_LEVEL"));
    assert_eq!(
        c.secrets()[0].value_from(),
        "arn:aws:ssm:us-east-1:123456789012:parameter/web/api-token"
    );
    assert_eq!(c.health_check().unwrap().interval(), Some(15));
    let log_options = c.log_configuration().unwrap().options().unwrap();
    assert_eq!(log_options["awslogs-group"], "/kforge/ecs/apps/web");

    let svc = rt()
        .block_on(ecs.describe_services().cluster("apps").services("web").send())
        .unwrap()
        .services()[0]
        .clone();
    assert_eq!(svc.desired_count(), 2);
    assert_eq!(svc.task_definition(), td.task_definition_arn());
    let vpc = svc.network_configuration().unwrap().awsvpc_configuration().unwrap();
    assert_eq!(vpc.subnets().len(), 2, "the two private subnets of eks-minimal");
    assert_eq!(vpc.security_groups().len(), 1);

    // Least privilege: the execution role reads exactly the spec's secret and writes exactly its log group.
    let iam = aws_sdk_iam::Client::new(&env.sdk(REGION));
    let doc = inline_policy(&iam, "ecs-apps-web-exec");
    assert!(
        doc.contains("arn:aws:ssm:us-east-1:123456789012:parameter/web/api-token"),
        "{doc}"
    );
    assert!(doc.contains("log-group:/kforge/ecs/apps/web:*"), "{doc}");
    assert!(!doc.contains("ecr:"), "a public image needs no ECR permission: {doc}");

    let logs = aws_sdk_cloudwatchlogs::Client::new(&env.sdk(REGION));
    let group = rt()
        .block_on(
            logs.describe_log_groups()
                .log_group_name_prefix("/kforge/ecs/apps/web")
                .send(),
        )
        .unwrap()
        .log_groups()[0]
        .clone();
    assert_eq!(group.retention_in_days(), Some(14));

    // The same spec again: nothing registered, nothing updated.
    env.proxy.clear_calls();
    env.ok(&["deploy", "-f", s(&spec)]);
    assert_eq!(env.mutating(), Vec::<String>::new());

    // A new image: revision 2, and the service moves to it.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("nginx:1.27", "nginx:1.28");
    let spec2 = write_spec(env.dir.path(), "web.yaml", &text);
    env.proxy.clear_calls();
    env.ok(&["deploy", "-f", s(&spec2)]);
    let calls = env.mutating();
    assert_eq!(calls, ["RegisterTaskDefinition", "UpdateService"], "{calls:?}");
    let svc = rt()
        .block_on(ecs.describe_services().cluster("apps").services("web").send())
        .unwrap()
        .services()[0]
        .clone();
    assert!(svc.task_definition().unwrap().ends_with("task-definition/apps-web:2"));

    let listed = env.ok(&["get", "services", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rows[0]["service"], "web");
    assert_eq!(rows[0]["taskDefinition"], "apps-web:2");

    // Delete: the service goes, its task definitions and logs stay; again: nothing to do, exit 0.
    env.ok(&["delete", "service", "web", "--cluster", "apps", "--yes"]);
    let left = rt()
        .block_on(ecs.describe_services().cluster("apps").services("web").send())
        .unwrap();
    assert!(
        left.services().iter().all(|s| s.status() == Some("INACTIVE")),
        "{left:?}"
    );
    let again = env.ok(&["delete", "service", "web", "--cluster", "apps", "--yes"]);
    assert!(again.stderr.contains("nothing to delete"), "{}", again.stderr);

    // --purge: task definitions, log group, kforge's roles and security group go too.
    let purged = env.ok(&["delete", "service", "-f", s(&spec2), "--purge", "--yes"]);
    let tds = rt()
        .block_on(ecs.list_task_definitions().family_prefix("apps-web").send())
        .unwrap();
    assert!(tds.task_definition_arns().is_empty(), "{tds:?}");
    let groups = rt()
        .block_on(
            logs.describe_log_groups()
                .log_group_name_prefix("/kforge/ecs/apps/web")
                .send(),
        )
        .unwrap();
    assert!(groups.log_groups().is_empty());
    for role in ["ecs-apps-web-exec", "ecs-apps-web-task"] {
        assert!(
            rt().block_on(iam.get_role().role_name(role).send()).is_err(),
            "{role} deleted"
        );
    }
    let left = env.tagged("ecs-apps-web", REGION);
    assert_eq!(left["security-group"], 0, "{left:?}\n{}", purged.stdout);
    assert!(purged.stdout.contains("apps-web (2 revisions)"), "{}", purged.stdout);
}

#[test]
fn bad_service_specs_are_refused_before_any_call() {
    let env = TestEnv::new();
    let head = "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  region: us-east-1\n  network:\n    subnets: [subnet-1]\n    securityGroups: [sg-1]\n";
    let cases: [(&str, String, &[&str]); 3] = [
        (
            "cpu.yaml",
            format!("{head}  image: nginx\n  cpu: 1024\n  memory: 512\n"),
            &[
                "spec.memory",
                "512 MiB does not go with cpu 1024",
                "with cpu 1024 use one of: 2048",
            ],
        ),
        (
            "noimage.yaml",
            head.to_string(),
            &["spec.image: no image given", "hint: set spec.image"],
        ),
        (
            "secret.yaml",
            format!("{head}  image: nginx\n  secrets:\n    DB_PASSWORD: /prod/db/password\n"),
            &[
                "spec.secrets.DB_PASSWORD",
                "is not an SSM parameter or Secrets Manager secret ARN",
            ],
        ),
    ];
    for (file, text, expected) in &cases {
        let path = write_spec(env.dir.path(), file, text);
        let o = env.run(&["deploy", "-f", s(&path)]);
        assert_eq!(o.code, 1, "{file}: {}", o.stderr);
        for e in *expected {
            assert!(o.stderr.contains(e), "{file}: expected {e:?} in:\n{}", o.stderr);
        }
    }
    // A cluster spec given to deploy says which kind it wants.
    let o = env.run(&["deploy", "-f", s(&example("eks-minimal.yaml"))]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("kind: expected `EcsService`, found `Cluster`"),
        "{}",
        o.stderr
    );
    assert!(env.proxy.calls().is_empty(), "{:?}", env.proxy.calls());
}

#[test]
fn a_local_image_is_pushed_to_ecr_and_run_by_digest() {
    let env = TestEnv::new();
    let reg = Registry::start(Some(("AWS", "123456789012-auth-token")));
    let src = env.dir.path().join("image");
    let img = layout(&src, "v7", &[tar_layer("srv", &noise(21, 20_000))]);
    env.ok(&[
        "create",
        "cluster",
        "-f",
        s(&example("eks-minimal.yaml")),
        "--phase",
        "network",
        "-q",
    ]);
    let text = "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: api\nspec:\n  cluster: apps\n  region: us-east-1\n  push:\n    source: oci:image\n  containerPort: 8080\n  network:\n    cluster: eks-minimal\n";
    let spec = write_spec(env.dir.path(), "api.yaml", text);
    let out = env.run_with_env(
        &["deploy", "-f", s(&spec)],
        &[("KFORGE_ECR_REGISTRY_ENDPOINT", &format!("http://{}", reg.host()))],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let td = rt()
        .block_on(ecs(&env).describe_task_definition().task_definition("apps-api").send())
        .unwrap()
        .task_definition()
        .unwrap()
        .clone();
    assert_eq!(
        td.container_definitions()[0].image(),
        Some(
            format!(
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api@{}",
                img.manifest_digest
            )
            .as_str()
        )
    );
    // The execution role may pull exactly that repository.
    let doc = inline_policy(&aws_sdk_iam::Client::new(&env.sdk(REGION)), "ecs-apps-api-exec");
    assert!(
        doc.contains("arn:aws:ecr:us-east-1:123456789012:repository/api"),
        "{doc}"
    );
}
