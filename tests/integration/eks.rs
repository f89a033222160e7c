//! The EKS provider end to end against moto: both EKS examples created with their settings (cluster, OIDC
//! provider, launch templates, nodegroups, Fargate profile, roles, kubeconfig), a quiet re-apply, day-2 commands,
//! spec edits applied in place or by replacement, and a delete that leaves nothing even without local state.
//!
//! moto has no EKS addon API (it answers HTML 404), so the examples are applied with `addons: []` here; the addon
//! calls are covered with aws-smithy-mocks in `src/providers/eks.rs`.

use std::collections::BTreeMap;

use crate::support::{REGION, TestEnv, example, moto, rt, s, write_spec};

fn config(region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(moto::shared().url())
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new("test", "test", None, None, "test"),
        ))
        .build()
}

fn eks(region: &str) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(&config(region))
}

fn iam() -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&config(REGION))
}

/// The example as written, minus its addons (moto lacks the addon API).
fn without_addons(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(example(name)).unwrap();
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    doc["spec"]["addons"] = serde_norway::Value::Sequence(Vec::new());
    write_spec(env.dir.path(), name, &serde_norway::to_string(&doc).unwrap())
}

fn oidc_providers() -> Vec<String> {
    rt().block_on(async {
        iam()
            .list_open_id_connect_providers()
            .send()
            .await
            .unwrap()
            .open_id_connect_provider_list()
            .iter()
            .filter_map(|p| p.arn().map(str::to_string))
            .collect()
    })
}

/// Everything of the cluster that is left anywhere: tagged EC2 resources, launch templates, EKS clusters, kforge
/// roles and OIDC providers.
fn leftovers(env: &TestEnv, cluster: &str, region: &str) -> BTreeMap<&'static str, usize> {
    let mut m: BTreeMap<&'static str, usize> = env
        .tagged(cluster, region)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    rt().block_on(async {
        let lts = env
            .ec2(region)
            .describe_launch_templates()
            .send()
            .await
            .unwrap()
            .launch_templates()
            .len();
        let clusters = eks(region).list_clusters().send().await.unwrap().clusters().len();
        let roles = iam()
            .list_roles()
            .path_prefix(format!("/kforge/{cluster}/"))
            .send()
            .await
            .unwrap()
            .roles()
            .len();
        for (k, n) in [("launch-template", lts), ("eks-cluster", clusters), ("iam-role", roles)] {
            if n > 0 {
                m.insert(k, n);
            }
        }
    });
    let oidc = oidc_providers().len();
    if oidc > 0 {
        m.insert("oidc-provider", oidc);
    }
    m
}

#[test]
fn eks_minimal_is_created_with_its_settings_reapplied_quietly_and_deleted_without_state() {
    let env = TestEnv::new();
    let spec = without_addons(&env, "eks-minimal.yaml");
    let o = env.ok(&["create", "cluster", "-f", s(&spec)]);
    assert!(o.stderr.contains("kubeconfig: context"), "{}", o.stderr);

    rt().block_on(async {
        let c = eks(REGION)
            .describe_cluster()
            .name("eks-minimal")
            .send()
            .await
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.version(), Some("1.33"));
        assert!(
            c.role_arn()
                .unwrap()
                .ends_with("role/kforge/eks-minimal/kforge-eks-minimal-cluster")
        );
        let vpc = c.resources_vpc_config().unwrap();
        assert_eq!(vpc.subnet_ids().len(), 4, "public and private subnets of both zones");
        assert!(vpc.endpoint_public_access() && vpc.endpoint_private_access());
        let tags = c.tags().unwrap();
        assert_eq!(tags["kforge.dev/cluster"], "eks-minimal");
        assert_eq!(tags["team"], "platform");
        let logs: Vec<&str> = c
            .logging()
            .unwrap()
            .cluster_logging()
            .iter()
            .filter(|s| s.enabled() == Some(true))
            .flat_map(|s| s.types().iter().map(|t| t.as_str()))
            .collect();
        assert_eq!(logs, ["api", "audit"]);

        let ng = eks(REGION)
            .describe_nodegroup()
            .cluster_name("eks-minimal")
            .nodegroup_name("workers")
            .send()
            .await
            .unwrap()
            .nodegroup
            .unwrap();
        let sc = ng.scaling_config().unwrap();
        assert_eq!(
            (sc.min_size(), sc.desired_size(), sc.max_size()),
            (Some(1), Some(2), Some(4))
        );
        assert_eq!(ng.instance_types(), ["m6i.large"]);
        assert_eq!(ng.capacity_type().unwrap().as_str(), "ON_DEMAND");
        assert_eq!(ng.ami_type().unwrap().as_str(), "AL2023_x86_64_STANDARD");
        assert_eq!(ng.version(), Some("1.33"));
        assert_eq!(ng.subnets().len(), 2, "private subnets only");
        assert_eq!(ng.tags().unwrap()["kforge.dev/resource"], "nodegroup/workers");
        let lt_id = ng.launch_template().unwrap().id().unwrap().to_string();

        // The launch template is what makes nodes secure: IMDSv2 required, encrypted gp3 root volume.
        let v = env
            .ec2(REGION)
            .describe_launch_template_versions()
            .launch_template_id(&lt_id)
            .versions("$Latest")
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0].launch_template_data().unwrap();
        assert_eq!(
            data.metadata_options().unwrap().http_tokens().unwrap().as_str(),
            "required"
        );
        let ebs = data.block_device_mappings()[0].ebs().unwrap();
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.volume_type().unwrap().as_str(), "gp3");

        let fp = eks(REGION)
            .describe_fargate_profile()
            .cluster_name("eks-minimal")
            .fargate_profile_name("serverless")
            .send()
            .await
            .unwrap()
            .fargate_profile
            .unwrap();
        assert_eq!(fp.selectors()[0].namespace(), Some("serverless"));
        assert!(
            fp.pod_execution_role_arn()
                .unwrap()
                .ends_with("kforge-eks-minimal-fargate")
        );
        assert_eq!(fp.subnets().len(), 2, "Fargate runs in the private subnets");
    });
    let providers = oidc_providers();
    assert_eq!(providers.len(), 1, "{providers:?}");
    let tags = rt().block_on(async {
        iam()
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(&providers[0])
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect::<BTreeMap<_, _>>()
    });
    assert_eq!(tags["kforge.dev/cluster"], "eks-minimal");

    // The kubeconfig create wrote parses with kubectl and points at the cluster through `kforge token`.
    let kubeconfig = env.dir.path().join(".kube/config");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("cluster/eks-minimal") && text.contains("token"), "{text}");

    // Re-applying the same spec makes no mutating call at all.
    env.proxy.reset();
    let o = env.ok(&["plan", "-f", s(&spec), "--detailed-exitcode"]);
    assert!(o.stdout.contains("0 to create, 0 to update in place"), "{}", o.stdout);
    env.ok(&["apply", "-f", s(&spec)]);
    assert_eq!(env.mutating(), Vec::<String>::new());

    // What Kubernetes itself makes in the VPC for a cluster: a Service's load balancer and target group, its
    // security group, a detached pod ENI. kforge never created them, but they would block the VPC's deletion.
    let k8s = kubernetes_leftovers(&env, "eks-minimal");

    // Delete without the local state: everything is found by tag, and a second delete has nothing to do.
    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let o = env.ok(&["delete", "cluster", "eks-minimal", "--yes"]);
    for kind in [
        "eks-nodegroup",
        "eks-fargate-profile",
        "eks-cluster",
        "iam-oidc-provider",
        "launch-template",
        "load-balancer",
        "target-group",
        "network-interface",
    ] {
        assert!(o.stdout.contains(kind), "{kind} in the report:\n{}", o.stdout);
    }
    assert_eq!(leftovers(&env, "eks-minimal", REGION), BTreeMap::new());
    k8s.assert_gone(&env);
    let o = env.ok(&["delete", "cluster", "eks-minimal", "--yes"]);
    assert!(o.stderr.contains("nothing to delete"), "{}", o.stderr);
}

struct KubernetesLeftovers {
    load_balancer: String,
    target_group: String,
    security_group: String,
    eni: String,
}

/// Creates what the Kubernetes service controller and the VPC CNI leave in a cluster's VPC, tagged as they tag.
fn kubernetes_leftovers(env: &TestEnv, cluster: &str) -> KubernetesLeftovers {
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, Tag};
    let ec2 = env.ec2(REGION);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config(REGION));
    let owned = format!("kubernetes.io/cluster/{cluster}");
    rt().block_on(async {
        let subnets = ec2
            .describe_subnets()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:kforge.dev/cluster")
                    .values(cluster)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let vpc = subnets.subnets()[0].vpc_id().unwrap().to_string();
        let subnet_ids: Vec<String> = subnets
            .subnets()
            .iter()
            .map(|s| s.subnet_id().unwrap().to_string())
            .collect();
        let lb = elb
            .create_load_balancer()
            .name("k8s-default-web")
            .r#type(LoadBalancerTypeEnum::Network)
            .set_subnets(Some(subnet_ids[..2].to_vec()))
            .tags(Tag::builder().key(&owned).value("owned").build())
            .tags(
                Tag::builder()
                    .key("kubernetes.io/service-name")
                    .value("default/web")
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();
        let tg = elb
            .create_target_group()
            .name("k8s-default-web-80")
            .protocol(ProtocolEnum::Tcp)
            .port(80)
            .vpc_id(&vpc)
            .tags(Tag::builder().key("elbv2.k8s.aws/cluster").value(cluster).build())
            .send()
            .await
            .unwrap()
            .target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        elb.create_listener()
            .load_balancer_arn(&lb)
            .protocol(ProtocolEnum::Tcp)
            .port(80)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&tg)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let sg = ec2
            .create_security_group()
            .group_name("k8s-elb-web")
            .description("Security group for Kubernetes ELB")
            .vpc_id(&vpc)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                    .tags(aws_sdk_ec2::types::Tag::builder().key(&owned).value("owned").build())
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string();
        let eni = ec2
            .create_network_interface()
            .subnet_id(&subnet_ids[0])
            .description("aws-K8S-i-0123456789abcdef0")
            .send()
            .await
            .unwrap()
            .network_interface()
            .unwrap()
            .network_interface_id()
            .unwrap()
            .to_string();
        KubernetesLeftovers {
            load_balancer: lb,
            target_group: tg,
            security_group: sg,
            eni,
        }
    })
}

impl KubernetesLeftovers {
    fn assert_gone(&self, env: &TestEnv) {
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config(REGION));
        let ec2 = env.ec2(REGION);
        rt().block_on(async {
            let lbs = elb.describe_load_balancers().send().await.unwrap();
            assert!(
                lbs.load_balancers()
                    .iter()
                    .all(|l| l.load_balancer_arn() != Some(self.load_balancer.as_str())),
                "load balancer left"
            );
            let tgs = elb.describe_target_groups().send().await.unwrap();
            assert!(
                tgs.target_groups()
                    .iter()
                    .all(|t| t.target_group_arn() != Some(self.target_group.as_str())),
                "target group left"
            );
            let sgs = ec2.describe_security_groups().send().await.unwrap();
            assert!(
                sgs.security_groups()
                    .iter()
                    .all(|g| g.group_id() != Some(self.security_group.as_str())),
                "security group left"
            );
            let enis = ec2.describe_network_interfaces().send().await.unwrap();
            assert!(
                enis.network_interfaces()
                    .iter()
                    .all(|e| e.network_interface_id() != Some(self.eni.as_str())),
                "network interface left"
            );
        });
    }
}

#[test]
fn gpu_spot_example_gets_spot_gpu_nodegroups_with_taints_and_volumes() {
    let env = TestEnv::new();
    let spec = without_addons(&env, "eks-gpu-spot.yaml");
    let region = "us-west-2";
    let kubeconfig = env.dir.path().join("kc");
    env.ok(&["create", "cluster", "-f", s(&spec), "--kubeconfig", s(&kubeconfig)]);
    assert!(kubeconfig.exists());

    rt().block_on(async {
        let client = eks(region);
        let mut names = client
            .list_nodegroups()
            .cluster_name("ml-gpu")
            .send()
            .await
            .unwrap()
            .nodegroups()
            .to_vec();
        names.sort();
        assert_eq!(names, ["batch-spot", "gpu-spot", "system"]);
        let gpu = client
            .describe_nodegroup()
            .cluster_name("ml-gpu")
            .nodegroup_name("gpu-spot")
            .send()
            .await
            .unwrap()
            .nodegroup
            .unwrap();
        assert_eq!(gpu.capacity_type().unwrap().as_str(), "SPOT");
        assert_eq!(gpu.ami_type().unwrap().as_str(), "AL2023_x86_64_NVIDIA");
        assert_eq!(gpu.instance_types(), ["g5.xlarge", "g5.2xlarge", "g6.xlarge"]);
        assert_eq!(gpu.labels().unwrap()["kforge.dev/pool"], "gpu");
        let taint = &gpu.taints()[0];
        assert_eq!(
            (taint.key(), taint.value(), taint.effect().unwrap().as_str()),
            (Some("nvidia.com/gpu"), Some("true"), "NO_SCHEDULE")
        );
        assert_eq!(gpu.subnets().len(), 3);
        let lt = gpu.launch_template().unwrap().id().unwrap();
        let v = env
            .ec2(region)
            .describe_launch_template_versions()
            .launch_template_id(lt)
            .versions("$Latest")
            .send()
            .await
            .unwrap();
        let ebs = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap()
            .block_device_mappings()[0]
            .ebs()
            .unwrap()
            .clone();
        assert_eq!(
            (ebs.volume_size(), ebs.iops(), ebs.throughput(), ebs.encrypted()),
            (Some(200), Some(6000), Some(250), Some(true))
        );
    });
    assert_eq!(oidc_providers().len(), 1);

    env.proxy.reset();
    env.ok(&["apply", "-f", s(&spec)]);
    assert_eq!(env.mutating(), Vec::<String>::new());

    env.ok(&["delete", "cluster", "-f", s(&spec), "--yes"]);
    assert_eq!(leftovers(&env, "ml-gpu", region), BTreeMap::new());
}

#[test]
fn nodegroup_edits_apply_in_place_or_by_replacement_and_day2_commands_work() {
    let env = TestEnv::new();
    let spec = without_addons(&env, "eks-minimal.yaml");
    env.ok(&["create", "cluster", "-f", s(&spec), "--no-kubeconfig", "-q"]);
    assert!(!env.dir.path().join(".kube/config").exists(), "--no-kubeconfig");

    // get nodegroups, as a table and as JSON.
    let o = env.ok(&["get", "nodegroups", "--cluster", "eks-minimal"]);
    assert!(
        o.stdout.contains("workers") && o.stdout.contains("ACTIVE"),
        "{}",
        o.stdout
    );
    let o = env.ok(&["get", "nodegroups", "--cluster", "eks-minimal", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(rows[0]["desired"], 2);

    // scale nodegroup: one UpdateNodegroupConfig; out-of-bounds sizes refused with the flag to pass.
    env.proxy.reset();
    let o = env.ok(&[
        "scale",
        "nodegroup",
        "workers",
        "--cluster",
        "eks-minimal",
        "--nodes",
        "3",
    ]);
    assert!(o.stdout.contains("1/2/4 -> 1/3/4"), "{}", o.stdout);
    assert!(o.stderr.contains("the next apply scales back"), "{}", o.stderr);
    assert_eq!(
        env.mutating(),
        ["S3 POST /clusters/eks-minimal/node-groups/workers/update-config"]
    );
    let o = env.run(&[
        "scale",
        "nodegroup",
        "workers",
        "--cluster",
        "eks-minimal",
        "--nodes",
        "9",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("hint: pass --max 9"), "{}", o.stderr);

    // The spec still says 2: plan shows an in-place update, apply makes exactly that call.
    let text = std::fs::read_to_string(&spec).unwrap();
    let edited = write_spec(
        env.dir.path(),
        "edited.yaml",
        &text.replace("desiredSize: 2", "desiredSize: 4"),
    );
    let o = env.ok(&["plan", "-f", s(&edited)]);
    assert!(
        o.stdout.contains("~ nodegroup/workers (workers): update in place"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("scaling: min=1 desired=3 max=4 -> min=1 desired=4 max=4"),
        "{}",
        o.stdout
    );
    env.proxy.reset();
    env.ok(&["apply", "-f", s(&edited), "-q"]);
    assert_eq!(
        env.mutating(),
        ["S3 POST /clusters/eks-minimal/node-groups/workers/update-config"]
    );

    // Another instance type cannot change in place: plan says replace.
    let retyped = write_spec(env.dir.path(), "retyped.yaml", &text.replace("m6i.large", "m7i.large"));
    let o = env.ok(&["plan", "-f", s(&retyped)]);
    assert!(
        o.stdout.contains("-/+ nodegroup/workers (workers): replace"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("instanceTypes: m6i.large -> m7i.large"),
        "{}",
        o.stdout
    );

    // A version change is not apply's business: the error points at `upgrade cluster`.
    let newer = write_spec(
        env.dir.path(),
        "newer.yaml",
        &text.replace("kubernetesVersion: '1.33'", "kubernetesVersion: '1.34'"),
    );
    let o = env.run(&["plan", "-f", s(&newer)]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("kforge upgrade cluster eks-minimal --to 1.34"),
        "{}",
        o.stderr
    );
    let o = env.run(&["upgrade", "cluster", "eks-minimal", "--to", "1.35"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("only be upgraded to the next minor version"),
        "{}",
        o.stderr
    );
    let o = env.ok(&["upgrade", "cluster", "eks-minimal", "--to", "1.34", "--dry-run"]);
    assert!(
        o.stdout.contains("control plane eks-minimal") && o.stdout.contains("planned"),
        "{}",
        o.stdout
    );

    env.ok(&["delete", "cluster", "eks-minimal", "--yes", "-q"]);
    assert_eq!(leftovers(&env, "eks-minimal", REGION), BTreeMap::new());
}

/// Input EKS would reject, or kforge cannot honour, is refused with a field path and a hint before any call.
#[test]
fn bad_eks_input_is_refused_before_any_call() {
    let env = TestEnv::new();
    let head = |name: &str| {
        format!(
            "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  provider: eks\n  region: us-east-1\n"
        )
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "name.yaml",
            head("my.cluster"),
            &["metadata.name: `my.cluster` is not a valid cluster name", "hint:"],
        ),
        (
            "version.yaml",
            format!("{}  kubernetesVersion: '1.29'\n", head("demo")),
            &[
                "spec.kubernetesVersion: version `1.29` is not supported",
                "hint: use one of",
            ],
        ),
        (
            "spot.yaml",
            format!("{}  nodeGroups:\n    - {{name: s, spot: true}}\n", head("demo")),
            &[
                "spec.nodeGroups[0].instanceTypes: a spot group needs its instance types stated",
                "hint:",
            ],
        ),
        (
            "endpoint.yaml",
            format!(
                "{}  eks:\n    endpoint: {{publicAccess: false, privateAccess: false}}\n",
                head("demo")
            ),
            &["spec.eks.endpoint: with neither public nor private access", "hint:"],
        ),
        (
            "logging.yaml",
            format!("{}  eks:\n    logging: [api, everything]\n", head("demo")),
            &[
                "spec.eks.logging[1]: `everything` is not an EKS control-plane log type",
                "hint: use some of",
            ],
        ),
        (
            "fargate.yaml",
            format!(
                "{}  network: {{topology: public}}\n  eks:\n    fargateProfiles: [{{name: fp, selectors: [{{namespace: jobs}}]}}]\n",
                head("demo")
            ),
            &[
                "spec.eks.fargateProfiles: Fargate runs pods only in private subnets",
                "hint:",
            ],
        ),
        (
            "kms.yaml",
            format!("{}  eks:\n    secretsEncryptionKeyArn: my-key\n", head("demo")),
            &["spec.eks.secretsEncryptionKeyArn: `my-key` is not a KMS key ARN"],
        ),
    ];
    env.assert_create_refused_before_any_call(&cases);
}

#[test]
fn a_group_dropped_from_the_spec_goes_with_its_launch_template_and_volume_edits_roll_in_place() {
    let env = TestEnv::new();
    let spec = without_addons(&env, "eks-minimal.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut two = doc.clone();
    let extra: serde_norway::Value =
        serde_norway::from_str("{name: extra, instanceType: m6i.large, desiredSize: 1}").unwrap();
    two["spec"]["nodeGroups"].as_sequence_mut().unwrap().push(extra);
    let two = write_spec(env.dir.path(), "two.yaml", &serde_norway::to_string(&two).unwrap());
    env.ok(&["create", "cluster", "-f", s(&two), "--no-kubeconfig", "-q"]);

    let o = env.ok(&["plan", "-f", s(&spec)]);
    assert!(
        o.stdout
            .contains("- nodegroup/extra (extra): delete, no longer in the spec"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("- launch-template/extra"), "{}", o.stdout);
    env.ok(&["apply", "-f", s(&spec), "-q"]);
    let names = rt().block_on(async {
        eks(REGION)
            .list_nodegroups()
            .cluster_name("eks-minimal")
            .send()
            .await
            .unwrap()
            .nodegroups()
            .to_vec()
    });
    assert_eq!(names, ["workers"]);
    let lts = rt().block_on(async {
        env.ec2(REGION)
            .describe_launch_templates()
            .send()
            .await
            .unwrap()
            .launch_templates()
            .len()
    });
    assert_eq!(lts, 1);
    env.ok(&["plan", "-f", s(&spec), "--detailed-exitcode"]);

    // A bigger root volume is a new launch template version the nodegroup rolls onto: in place, not replaced.
    let mut bigger = doc;
    bigger["spec"]["nodeGroups"][0]["volume"] = serde_norway::from_str("{size: 120}").unwrap();
    let bigger = write_spec(
        env.dir.path(),
        "bigger.yaml",
        &serde_norway::to_string(&bigger).unwrap(),
    );
    let o = env.ok(&["plan", "-f", s(&bigger)]);
    assert!(o.stdout.contains("~ launch-template/workers"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("gp3 80GiB encrypted=true -> gp3 120GiB encrypted=true"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("~ nodegroup/workers (workers): update in place"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("launchTemplateVersion: 1 -> (known after apply)"),
        "{}",
        o.stdout
    );
    env.ok(&["delete", "cluster", "eks-minimal", "--yes", "-q"]);
}
