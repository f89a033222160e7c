//! What moto cannot show (its EKS objects are ACTIVE at once and it has no addon or upgrade API): waiting
//! through CREATING, failures with their health issues, deadlines, and the calls addons and upgrades make, in
//! order. Answers come from aws-smithy-mocks in sequential mode, which fails the test on any unexpected call.
use super::*;
use crate::aws::Aws;
use crate::engine::executor::{self, ExecOptions, Job, Outcome};
use crate::model::{Taint, Volume};
use aws_sdk_eks::operation::create_addon::CreateAddonOutput;
use aws_sdk_eks::operation::create_cluster::CreateClusterOutput;
use aws_sdk_eks::operation::describe_addon::{DescribeAddonError, DescribeAddonOutput};
use aws_sdk_eks::operation::describe_addon_versions::DescribeAddonVersionsOutput;
use aws_sdk_eks::operation::describe_cluster::{DescribeClusterError, DescribeClusterOutput};
use aws_sdk_eks::operation::describe_nodegroup::DescribeNodegroupOutput;
use aws_sdk_eks::operation::list_addons::ListAddonsOutput;
use aws_sdk_eks::operation::list_nodegroups::ListNodegroupsOutput;
use aws_sdk_eks::operation::update_addon::UpdateAddonOutput;
use aws_sdk_eks::operation::update_cluster_version::UpdateClusterVersionOutput;
use aws_sdk_eks::operation::update_nodegroup_version::UpdateNodegroupVersionOutput;
use aws_sdk_eks::types::{
    AddonInfo, AddonStatus, AddonVersionInfo, Certificate, Compatibility, Issue, NodegroupHealth, NodegroupIssueCode,
    error::ResourceNotFoundException,
};
use aws_smithy_mocks::{Rule, RuleMode, mock};
use std::sync::Arc;
use std::time::Instant;

fn ctx(rules: &[&Rule]) -> Ctx {
    let client = crate::aws::mock_client!(aws_sdk_eks, RuleMode::Sequential, rules);
    Ctx::new(Aws::with_clients(None, Some(client), None), "demo")
}

fn kforge_tags() -> HashMap<String, String> {
    HashMap::from([(tags::CLUSTER.to_string(), "demo".to_string())])
}

fn cluster_in(status: ClusterStatus, version: &str) -> aws_sdk_eks::types::Cluster {
    aws_sdk_eks::types::Cluster::builder()
        .name("demo")
        .arn("arn:aws:eks:us-east-1:123456789012:cluster/demo")
        .version(version)
        .status(status)
        .endpoint("https://ABC.gr7.us-east-1.eks.amazonaws.com")
        .certificate_authority(Certificate::builder().data("Q0E=").build())
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigResponse::builder()
                .subnet_ids("subnet-1")
                .endpoint_public_access(true)
                .endpoint_private_access(true)
                .public_access_cidrs("0.0.0.0/0")
                .build(),
        )
        .logging(
            Logging::builder()
                .cluster_logging(LogSetup::builder().types(LogType::Api).enabled(true).build())
                .build(),
        )
        .set_tags(Some(kforge_tags()))
        .build()
}

fn describe_cluster(status: ClusterStatus, version: &'static str) -> Rule {
    mock!(aws_sdk_eks::Client::describe_cluster).then_output(move || {
        DescribeClusterOutput::builder()
            .cluster(cluster_in(status.clone(), version))
            .build()
    })
}

fn eks_cluster() -> EksCluster {
    EksCluster {
        id: CLUSTER_ID.into(),
        name: "demo".into(),
        version: "1.33".into(),
        subnets: vec!["subnet/private-us-east-1a".into()],
        eks: Eks {
            endpoint_public: true,
            endpoint_private: true,
            public_access_cidrs: vec!["0.0.0.0/0".parse().unwrap()],
            logging: vec!["api".into()],
            secrets_encryption_key_arn: None,
            with_oidc: false,
            fargate_profiles: Vec::new(),
        },
        tags: BTreeMap::from([(tags::CLUSTER.to_string(), "demo".to_string())]),
        deps: Vec::new(),
    }
}

fn cluster_inputs() -> Inputs {
    Inputs::from_finished(&BTreeMap::from([
        (
            "role/cluster".to_string(),
            Outputs::from([("arn".to_string(), "arn:aws:iam::123456789012:role/c".to_string())]),
        ),
        (
            "subnet/private-us-east-1a".to_string(),
            Outputs::from([("id".to_string(), "subnet-1".to_string())]),
        ),
    ]))
}

#[tokio::test]
async fn a_new_cluster_is_created_once_then_waited_for_until_active() {
    let absent = mock!(aws_sdk_eks::Client::describe_cluster)
        .then_error(|| DescribeClusterError::ResourceNotFoundException(not_found()));
    let create = mock!(aws_sdk_eks::Client::create_cluster)
        .match_requests(|r| {
            r.version() == Some("1.33")
                && r.role_arn() == Some("arn:aws:iam::123456789012:role/c")
                && r.resources_vpc_config().is_some_and(|v| v.subnet_ids() == ["subnet-1"])
        })
        .then_output(|| {
            CreateClusterOutput::builder()
                .cluster(cluster_in(ClusterStatus::Creating, "1.33"))
                .build()
        });
    let creating = describe_cluster(ClusterStatus::Creating, "1.33");
    let active = describe_cluster(ClusterStatus::Active, "1.33");
    let ctx = ctx(&[&absent, &create, &creating, &active]);
    let c = eks_cluster();
    let desired = c.desired(&cluster_inputs());
    let mut steps = Vec::new();
    for _ in 0..3 {
        steps.push(c.apply(&ctx, &Change::Create, None, &desired).await.unwrap());
    }
    assert!(matches!(&steps[0], Step::Retry { reason, .. } if reason.starts_with("CREATING")));
    assert!(matches!(&steps[1], Step::Retry { reason, .. } if reason == "CREATING"));
    let Some(Step::Done(outputs)) = steps.pop() else {
        panic!("ACTIVE is done")
    };
    assert_eq!(outputs["endpoint"], "https://ABC.gr7.us-east-1.eks.amazonaws.com");
    assert_eq!(outputs["certificateAuthority"], "Q0E=");
    assert_eq!(create.num_calls(), 1, "created once, then only watched");
}

#[tokio::test]
async fn settings_change_in_place_one_eks_update_at_a_time() {
    use aws_sdk_eks::operation::update_cluster_config::UpdateClusterConfigOutput;
    let with = |status: ClusterStatus, cidr: &'static str, logs: &'static [LogType]| {
        mock!(aws_sdk_eks::Client::describe_cluster).then_output(move || {
            let mut c = cluster_in(status.clone(), "1.33");
            c.resources_vpc_config = Some(
                aws_sdk_eks::types::VpcConfigResponse::builder()
                    .subnet_ids("subnet-1")
                    .endpoint_public_access(true)
                    .endpoint_private_access(true)
                    .public_access_cidrs(cidr)
                    .build(),
            );
            c.logging = Some(
                Logging::builder()
                    .cluster_logging(LogSetup::builder().set_types(Some(logs.to_vec())).enabled(true).build())
                    .build(),
            );
            DescribeClusterOutput::builder().cluster(c).build()
        })
    };
    let before = with(ClusterStatus::Active, "0.0.0.0/0", &[LogType::Api]);
    let endpoint = mock!(aws_sdk_eks::Client::update_cluster_config)
        .match_requests(|r| {
            r.logging().is_none()
                && r.resources_vpc_config()
                    .is_some_and(|v| v.public_access_cidrs() == ["203.0.113.0/24"] && v.subnet_ids().is_empty())
        })
        .then_output(|| UpdateClusterConfigOutput::builder().build());
    let updating = with(ClusterStatus::Updating, "203.0.113.0/24", &[LogType::Api]);
    let endpoint_done = with(ClusterStatus::Active, "203.0.113.0/24", &[LogType::Api]);
    let logging = mock!(aws_sdk_eks::Client::update_cluster_config)
        .match_requests(|r| {
            r.resources_vpc_config().is_none()
                && r.logging().is_some_and(|l| {
                    l.cluster_logging().len() == 1
                        && l.cluster_logging()[0].types() == [LogType::Api, LogType::Audit]
                        && l.cluster_logging()[0].enabled() == Some(true)
                })
        })
        .then_output(|| UpdateClusterConfigOutput::builder().build());
    let all_done = with(ClusterStatus::Active, "203.0.113.0/24", &[LogType::Api, LogType::Audit]);
    let ctx = ctx(&[&before, &endpoint, &updating, &endpoint_done, &logging, &all_done]);
    let mut c = eks_cluster();
    c.eks.public_access_cidrs = vec!["203.0.113.0/24".parse().unwrap()];
    c.eks.logging = vec!["api".into(), "audit".into()];
    let desired = c.desired(&cluster_inputs());
    let mut reasons = Vec::new();
    loop {
        match c
            .apply(&ctx, &Change::Update(Vec::new()), None, &desired)
            .await
            .unwrap()
        {
            Step::Retry { reason, .. } => reasons.push(reason),
            Step::Done(_) => break,
            Step::Blocked { reason } => panic!("{reason}"),
        }
    }
    assert_eq!(reasons, ["updating endpoint access", "UPDATING", "updating logging"]);
    assert_eq!((endpoint.num_calls(), logging.num_calls()), (1, 1));
}

#[test]
fn version_changes_point_at_upgrade_and_key_removal_is_refused() {
    let c = eks_cluster();
    let observed = |version: &str, key: &str| Observed {
        id: "demo".into(),
        attrs: BTreeMap::from([("version", version.to_string()), ("secretsKey", key.to_string())]),
        outputs: Outputs::new(),
    };
    let desired = c.desired(&cluster_inputs());
    let e = c.diff(Some(&observed("1.32", "")), &desired).unwrap_err().to_string();
    assert!(e.contains("hint: run `kforge upgrade cluster demo --to 1.33`"), "{e}");
    let e = c.diff(Some(&observed("1.31", "")), &desired).unwrap_err().to_string();
    assert!(
        e.contains("one minor version at a time") && e.contains("--to 1.32"),
        "{e}"
    );
    let e = c.diff(Some(&observed("1.34", "")), &desired).unwrap_err().to_string();
    assert!(e.contains("EKS cannot downgrade"), "{e}");
    let key = "arn:aws:kms:us-east-1:123456789012:key/abc";
    let e = c.diff(Some(&observed("1.33", key)), &desired).unwrap_err().to_string();
    assert!(e.contains("cannot remove or replace a secrets encryption key"), "{e}");
}

/// The engine's executor drives the cluster's converge step; the run's deadline ends the wait.
struct ConvergeJob {
    cluster: EksCluster,
    ctx: Ctx,
    deps: Vec<String>,
}

#[async_trait]
impl Job<Outputs> for ConvergeJob {
    fn id(&self) -> &str {
        &self.cluster.id
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn deadline(&self) -> Duration {
        self.cluster.deadline()
    }
    fn action(&self) -> String {
        "create".into()
    }
    async fn step(&self, _: &BTreeMap<String, Outputs>) -> anyhow::Result<Step<Outputs>> {
        let desired = self.cluster.desired(&cluster_inputs());
        self.cluster.apply(&self.ctx, &Change::Create, None, &desired).await
    }
}

#[tokio::test]
async fn a_cluster_still_creating_at_the_deadline_is_a_clear_timeout() {
    let creating = mock!(aws_sdk_eks::Client::describe_cluster)
        .sequence()
        .output(|| {
            DescribeClusterOutput::builder()
                .cluster(cluster_in(ClusterStatus::Creating, "1.33"))
                .build()
        })
        .repeatedly()
        .build();
    let job = ConvergeJob {
        cluster: eks_cluster(),
        ctx: ctx(&[&creating]),
        deps: Vec::new(),
    };
    let opts = ExecOptions {
        overall_deadline: Some(Instant::now() + Duration::from_secs(1)),
        ..ExecOptions::default()
    };
    let jobs: Vec<Arc<dyn Job<Outputs>>> = vec![Arc::new(job)];
    let mut out = executor::run(jobs, &opts, &crate::progress::Silent).await.unwrap();
    let Some(Outcome::Failed(e)) = out.remove(CLUSTER_ID) else {
        panic!("the wait fails at the deadline")
    };
    let msg = format!("{e:#}");
    assert!(msg.starts_with("eks-cluster: gave up after"), "{msg}");
    assert!(msg.contains("CREATING"), "{msg}");
    assert!(
        msg.contains("hint: the resource may still be converging; re-run"),
        "{msg}"
    );
}

fn nodegroup() -> ManagedNodegroup {
    ManagedNodegroup {
        id: "nodegroup/gpu".into(),
        cluster: "demo".into(),
        kubernetes_version: "1.33".into(),
        group: NodeGroup {
            name: "gpu".into(),
            instance_types: vec!["g5.xlarge".into()],
            min_size: 0,
            max_size: 2,
            desired_size: 1,
            spot: true,
            gpu: true,
            labels: BTreeMap::new(),
            taints: vec![Taint {
                key: "nvidia.com/gpu".into(),
                value: None,
                effect: TaintEffect::NoSchedule,
            }],
            volume: Volume {
                size_gib: 80,
                kind: "gp3".into(),
                encrypted: true,
                iops: None,
                throughput: None,
            },
            subnets: SubnetType::Private,
        },
        subnets: Vec::new(),
        launch_template: "launch-template/gpu".into(),
        tags: BTreeMap::new(),
        deps: Vec::new(),
    }
}

#[tokio::test]
async fn a_failed_nodegroup_reports_its_health_issues() {
    let failed = mock!(aws_sdk_eks::Client::describe_nodegroup).then_output(|| {
        DescribeNodegroupOutput::builder()
            .nodegroup(
                aws_sdk_eks::types::Nodegroup::builder()
                    .nodegroup_name("gpu")
                    .status(NodegroupStatus::CreateFailed)
                    .health(
                        NodegroupHealth::builder()
                            .issues(
                                Issue::builder()
                                    .code(NodegroupIssueCode::AsgInstanceLaunchFailures)
                                    .message("Could not launch Spot Instances. InsufficientInstanceCapacity")
                                    .resource_ids("eks-gpu-1234")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let ctx = ctx(&[&failed]);
    let ng = nodegroup();
    let err = ng
        .apply(&ctx, &Change::Create, None, &Desired::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nodegroup/gpu (nodegroup gpu of demo) is CREATE_FAILED"),
        "{err}"
    );
    assert!(
        err.contains(
            "AsgInstanceLaunchFailures: Could not launch Spot Instances. InsufficientInstanceCapacity (eks-gpu-1234)"
        ),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn gpu_and_graviton_groups_get_their_ami_types() {
    let mut g = nodegroup().group;
    assert_eq!(ami_type(&g), AmiTypes::Al2023X8664Nvidia);
    g.gpu = false;
    g.instance_types = vec!["m7g.large".into(), "c7gn.xlarge".into()];
    assert_eq!(ami_type(&g), AmiTypes::Al2023Arm64Standard);
    g.instance_types = vec!["m6i.large".into()];
    assert_eq!(ami_type(&g), AmiTypes::Al2023X8664Standard);
    g.gpu = true;
    g.instance_types = vec!["g5g.xlarge".into()];
    assert_eq!(
        ami_type(&g),
        AmiTypes::Al2023X8664Nvidia,
        "g5g is a GPU family, not a Graviton suffix"
    );
}

fn addon(version: Option<&str>) -> EksAddon {
    EksAddon {
        id: "addon/coredns".into(),
        cluster: "demo".into(),
        kubernetes_version: "1.33".into(),
        addon: Addon {
            name: "coredns".into(),
            version: version.map(str::to_string),
        },
        resolved_version: OnceCell::new(),
        tags: BTreeMap::new(),
        deps: Vec::new(),
    }
}

fn describe_addon(status: AddonStatus, version: &'static str) -> Rule {
    mock!(aws_sdk_eks::Client::describe_addon).then_output(move || {
        DescribeAddonOutput::builder()
            .addon(
                aws_sdk_eks::types::Addon::builder()
                    .addon_name("coredns")
                    .addon_version(version)
                    .status(status.clone())
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn addons_are_created_then_updated_with_the_right_calls() {
    let versions = mock!(aws_sdk_eks::Client::describe_addon_versions)
        .match_requests(|r| r.addon_name() == Some("coredns") && r.kubernetes_version() == Some("1.33"))
        .then_output(|| {
            let compat = |default| {
                Compatibility::builder()
                    .cluster_version("1.33")
                    .default_version(default)
                    .build()
            };
            DescribeAddonVersionsOutput::builder()
                .addons(
                    AddonInfo::builder()
                        .addon_name("coredns")
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.12.1-eksbuild.2")
                                .compatibilities(compat(false))
                                .build(),
                        )
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.11.4-eksbuild.14")
                                .compatibilities(compat(true))
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let absent = mock!(aws_sdk_eks::Client::describe_addon)
        .then_error(|| DescribeAddonError::ResourceNotFoundException(not_found()));
    let create = mock!(aws_sdk_eks::Client::create_addon)
        .match_requests(|r| {
            r.addon_name() == Some("coredns")
                && r.addon_version() == Some("v1.11.4-eksbuild.14")
                && r.resolve_conflicts() == Some(&ResolveConflicts::Overwrite)
        })
        .then_output(|| CreateAddonOutput::builder().build());
    let creating = describe_addon(AddonStatus::Creating, "v1.11.4-eksbuild.14");
    let active = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
    // Then the spec pins a newer version: one UpdateAddon, then wait.
    let before = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
    let update = mock!(aws_sdk_eks::Client::update_addon)
        .match_requests(|r| r.addon_version() == Some("v1.12.1-eksbuild.2"))
        .then_output(|| UpdateAddonOutput::builder().build());
    let updated = describe_addon(AddonStatus::Active, "v1.12.1-eksbuild.2");
    let ctx = ctx(&[
        &versions, &absent, &create, &creating, &active, &before, &update, &updated,
    ]);

    let default = addon(None);
    default
        .resolved_version
        .get_or_try_init(|| default_addon_version(&ctx, "coredns", "1.33"))
        .await
        .unwrap();
    let desired = default.desired(&Inputs::default());
    assert_eq!(
        desired.value("version").unwrap(),
        "v1.11.4-eksbuild.14",
        "EKS's default, not the newest"
    );
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(default.apply(&ctx, &Change::Create, None, &desired).await.unwrap());
    }
    assert!(matches!(&results[0], Step::Retry { reason, .. } if reason == "CREATING"));
    assert!(matches!(&results[1], Step::Retry { reason, .. } if reason == "CREATING"));
    assert!(matches!(&results[2], Step::Done(o) if o["version"] == "v1.11.4-eksbuild.14"));

    let pinned = addon(Some("v1.12.1-eksbuild.2"));
    let desired = pinned.desired(&Inputs::default());
    let first = pinned.apply(&ctx, &Change::Create, None, &desired).await.unwrap();
    assert!(matches!(first, Step::Retry { ref reason, .. } if reason == "updating to v1.12.1-eksbuild.2"));
    let done = pinned.apply(&ctx, &Change::Create, None, &desired).await.unwrap();
    assert!(matches!(done, Step::Done(ref o) if o["version"] == "v1.12.1-eksbuild.2"));
    assert_eq!((create.num_calls(), update.num_calls()), (1, 1));
}

#[tokio::test]
async fn upgrade_goes_control_plane_then_nodegroups_then_addons() {
    use crate::providers::eks_day2::{UpgradeStep, Waiting, upgrade};
    let start = describe_cluster(ClusterStatus::Active, "1.33");
    let update_cluster = mock!(aws_sdk_eks::Client::update_cluster_version)
        .match_requests(|r| r.name() == Some("demo") && r.version() == Some("1.34"))
        .then_output(|| UpdateClusterVersionOutput::builder().build());
    let updating = describe_cluster(ClusterStatus::Updating, "1.33");
    let upgraded = describe_cluster(ClusterStatus::Active, "1.34");
    // The nodegroup listing (the inventory checks the cluster is kforge's first).
    let inventory_cluster = describe_cluster(ClusterStatus::Active, "1.34");
    let list = mock!(aws_sdk_eks::Client::list_nodegroups)
        .then_output(|| ListNodegroupsOutput::builder().nodegroups("workers").build());
    let ng = |status: NodegroupStatus, version: &'static str| {
        mock!(aws_sdk_eks::Client::describe_nodegroup).then_output(move || {
            DescribeNodegroupOutput::builder()
                .nodegroup(
                    aws_sdk_eks::types::Nodegroup::builder()
                        .nodegroup_name("workers")
                        .status(status.clone())
                        .version(version)
                        .build(),
                )
                .build()
        })
    };
    let ng_before = ng(NodegroupStatus::Active, "1.33");
    let update_ng = mock!(aws_sdk_eks::Client::update_nodegroup_version)
        .match_requests(|r| r.nodegroup_name() == Some("workers") && r.version() == Some("1.34"))
        .then_output(|| UpdateNodegroupVersionOutput::builder().build());
    let ng_updating = ng(NodegroupStatus::Updating, "1.33");
    let ng_done = ng(NodegroupStatus::Active, "1.34");
    let addons =
        mock!(aws_sdk_eks::Client::list_addons).then_output(|| ListAddonsOutput::builder().addons("coredns").build());
    let addon_before = describe_addon(AddonStatus::Active, "v1.11.4-eksbuild.14");
    let versions = mock!(aws_sdk_eks::Client::describe_addon_versions)
        .match_requests(|r| r.kubernetes_version() == Some("1.34"))
        .then_output(|| {
            DescribeAddonVersionsOutput::builder()
                .addons(
                    AddonInfo::builder()
                        .addon_versions(
                            AddonVersionInfo::builder()
                                .addon_version("v1.12.1-eksbuild.2")
                                .compatibilities(
                                    Compatibility::builder()
                                        .cluster_version("1.34")
                                        .default_version(true)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let update_addon = mock!(aws_sdk_eks::Client::update_addon)
        .match_requests(|r| r.addon_version() == Some("v1.12.1-eksbuild.2"))
        .then_output(|| UpdateAddonOutput::builder().build());
    let addon_done = describe_addon(AddonStatus::Active, "v1.12.1-eksbuild.2");
    let ctx = ctx(&[
        &start,
        &update_cluster,
        &updating,
        &upgraded,
        &inventory_cluster,
        &list,
        &ng_before,
        &update_ng,
        &ng_updating,
        &ng_done,
        &addons,
        &addon_before,
        &versions,
        &update_addon,
        &addon_done,
    ]);
    let waiting = Waiting {
        poll: Duration::from_millis(1),
        deadline: Instant::now() + Duration::from_secs(30),
    };
    let steps = upgrade(&ctx, "1.34", false, waiting, &crate::progress::Silent)
        .await
        .unwrap();
    let step = |t: &str, f: &str, to: &str| UpgradeStep {
        target: t.into(),
        from: f.into(),
        to: to.into(),
        result: "upgraded".into(),
    };
    assert_eq!(
        steps,
        [
            step("control plane demo", "1.33", "1.34"),
            step("nodegroup workers", "1.33", "1.34"),
            step("addon coredns", "v1.11.4-eksbuild.14", "v1.12.1-eksbuild.2"),
        ]
    );
    for rule in [&update_cluster, &update_ng, &update_addon, &addon_done] {
        assert_eq!(rule.num_calls(), 1);
    }
}

/// EKS's "not found" as a real response carries it: the modeled error with its code (kforge classifies by code).
fn not_found() -> ResourceNotFoundException {
    ResourceNotFoundException::builder()
        .message("no")
        .meta(
            aws_sdk_eks::error::ErrorMetadata::builder()
                .code("ResourceNotFoundException")
                .message("no")
                .build(),
        )
        .build()
}
