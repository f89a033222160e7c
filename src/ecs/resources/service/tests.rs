use super::*;
use crate::aws::Aws;
use crate::engine::ExecOptions;
use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const TD1: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/apps-web:1";
const TD2: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/apps-web:2";

fn ctx(rules: &[&Rule]) -> Arc<Ctx> {
    let client = crate::aws::mock_client!(aws_sdk_ecs, RuleMode::MatchAny, rules);
    let ctx = Ctx::new(Aws::with_ecs(client), "ecs-apps-web");
    Arc::new(ctx)
}

fn service_spec(timeout: Duration) -> EcsService {
    let text = "apiVersion: kforge.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  region: us-east-1\n  image: nginx\n  desiredCount: 2\n  network:\n    subnets: [subnet-1]\n    securityGroups: [sg-1]\n";
    let spec: crate::spec::ecs::EcsServiceSpec = crate::spec::parse_kind(text, "s.yaml", "EcsService", "").unwrap();
    let mut s = EcsService::from_spec(&spec, "s.yaml", None, std::path::Path::new(".")).unwrap();
    s.deployment_timeout = timeout;
    s
}

fn deployment(status: &str, td: &str, state: ecs::DeploymentRolloutState, running: i32) -> ecs::Deployment {
    ecs::Deployment::builder()
        .status(status)
        .task_definition(td)
        .rollout_state(state)
        .rollout_state_reason("ECS deployment circuit breaker: tasks failed to start.")
        .desired_count(2)
        .running_count(running)
        .pending_count(2 - running)
        .build()
}

fn service(td: &str, deployments: Vec<ecs::Deployment>) -> DescribeServicesOutput {
    DescribeServicesOutput::builder()
        .services(
            ecs::Service::builder()
                .service_name("web")
                .service_arn("arn:aws:ecs:us-east-1:123456789012:service/apps/web")
                .status("ACTIVE")
                .task_definition(td)
                .desired_count(2)
                .set_deployments(Some(deployments))
                .build(),
        )
        .build()
}

/// Plans and applies the service against the mocked ECS, its task definition being `td`.
async fn run(ctx: &Arc<Ctx>, td: &str, timeout: Duration) -> (crate::engine::ApplyReport, Option<bool>) {
    let failed = Arc::new(Mutex::new(None));
    let resources: Vec<Arc<dyn Resource>> = vec![
        Arc::new(Known {
            id: "task-definition".into(),
            outputs: outputs(&[("id", td), ("arn", td)]),
            deps: Vec::new(),
        }),
        Arc::new(EcsServiceRes {
            id: "service".into(),
            service: service_spec(timeout),
            task_definition: "task-definition".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            security_group_res: Vec::new(),
            tags: BTreeMap::new(),
            deps: vec!["task-definition".into()],
            failed: failed.clone(),
            poll: Duration::from_millis(50),
        }),
    ];
    let opts = ExecOptions {
        overall_deadline: Some(Instant::now() + Duration::from_secs(30)),
        ..ExecOptions::default()
    };
    let plan = crate::engine::plan(ctx, resources, &[Phase::Cluster], &opts, &crate::progress::Silent)
        .await
        .unwrap();
    let report = crate::engine::apply(ctx, plan, &opts, &crate::progress::Silent)
        .await
        .unwrap();
    let failed = *failed.lock().unwrap();
    (report, failed)
}

#[tokio::test]
async fn a_deployment_that_never_stabilises_hits_the_deadline_clearly() {
    let stuck = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(|| {
            service(
                TD1,
                vec![deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::InProgress, 1)],
            )
        })
        .repeatedly()
        .build();
    let ctx = ctx(&[&stuck]);
    let started = Instant::now();
    let (report, failed) = run(&ctx, TD1, Duration::from_secs(1)).await;
    assert_eq!(report.errors.len(), 1);
    let msg = format!("{:#}", report.errors[0]);
    assert!(msg.contains("service: gave up after"), "{msg}");
    assert!(
        msg.contains("1/2 tasks running, 1 pending"),
        "the last state is named: {msg}"
    );
    assert_eq!(failed, None, "a timeout is not a rollback");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(stuck.num_calls() >= 3, "polled until the deadline");
}

#[tokio::test]
async fn a_circuit_breaker_rollback_is_reported_with_the_stopped_tasks_reasons() {
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        // Found running revision 1 (steady)...
        .output(|| {
            service(
                TD1,
                vec![deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::Completed, 2)],
            )
        })
        // ...revision 2's deployment fails and ECS goes back to revision 1.
        .output(|| {
            service(
                TD1,
                vec![
                    deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::InProgress, 1),
                    deployment("ACTIVE", TD2, ecs::DeploymentRolloutState::Failed, 0),
                ],
            )
        })
        .build();
    let update = mock!(aws_sdk_ecs::Client::update_service)
        .match_requests(|r| r.task_definition() == Some(TD2))
        .then_output(|| UpdateServiceOutput::builder().build());
    let stopped = mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|r| r.desired_status() == Some(&ecs::DesiredStatus::Stopped))
        .then_output(|| {
            ListTasksOutput::builder()
                .task_arns("arn:aws:ecs:us-east-1:123456789012:task/apps/0f1e")
                .build()
        });
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(|| {
        DescribeTasksOutput::builder()
            .tasks(
                ecs::Task::builder()
                    .task_arn("arn:aws:ecs:us-east-1:123456789012:task/apps/0f1e")
                    .stopped_reason("Essential container in task exited")
                    .containers(
                        ecs::Container::builder()
                            .name("web")
                            .exit_code(1)
                            .reason("CannotPullContainerError: pull access denied")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let ctx = ctx(&[&describe, &update, &stopped, &tasks]);
    let (report, failed) = run(&ctx, TD2, Duration::from_secs(30)).await;
    assert_eq!(update.num_calls(), 1);
    assert_eq!(report.errors.len(), 1);
    let msg = format!("{:#}", report.errors[0]);
    assert!(
        msg.contains("the deployment failed: ECS deployment circuit breaker"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "task 0f1e: Essential container in task exited (web: exit 1: CannotPullContainerError: pull access denied)"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("rollback: ECS went back to apps-web:1 (IN_PROGRESS)"),
        "{msg}"
    );
    assert_eq!(failed, Some(true));
}

#[test]
fn a_service_updated_in_place_is_judged_by_its_counts() {
    let svc = |running: i32| {
        ecs::Service::builder()
            .task_definition(TD2)
            .desired_count(2)
            .running_count(running)
            .deployments(deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::Completed, 2))
            .build()
    };
    assert_eq!(rollout(&svc(2), TD2), Rollout::Steady);
    assert!(matches!(rollout(&svc(0), TD2), Rollout::InProgress(_)));
    // With the old task definition back on the service, the same deployments are a rollback.
    let back = ecs::Service::builder()
        .task_definition(TD1)
        .desired_count(2)
        .running_count(2)
        .deployments(deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::Completed, 2))
        .build();
    assert!(matches!(rollout(&back, TD2), Rollout::Failed { .. }));
}

#[test]
fn rollout_states() {
    let steady = service(
        TD1,
        vec![deployment("PRIMARY", TD1, ecs::DeploymentRolloutState::Completed, 2)],
    );
    assert_eq!(rollout(&steady.services()[0], TD1), Rollout::Steady);
    let draining = service(
        TD2,
        vec![
            deployment("PRIMARY", TD2, ecs::DeploymentRolloutState::Completed, 2),
            deployment("ACTIVE", TD1, ecs::DeploymentRolloutState::Completed, 2),
        ],
    );
    assert!(matches!(rollout(&draining.services()[0], TD2), Rollout::InProgress(r) if r.contains("draining")));
}

/// A service whose tasks never finish draining (moto's services go INACTIVE at once) ends `delete service` at its
/// --timeout with the run's deadline type (exit code 4), naming the service and what it waited for.
#[tokio::test]
async fn a_service_that_never_drains_ends_at_the_deadline() {
    let draining = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(|| {
            DescribeServicesOutput::builder()
                .services(
                    ecs::Service::builder()
                        .service_name("web")
                        .status("DRAINING")
                        .desired_count(0)
                        .running_count(1)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let ctx = ctx(&[&draining]);
    let opts = ExecOptions {
        overall_deadline: Some(Instant::now() + Duration::from_secs(1)),
        ..ExecOptions::default()
    };
    // The service alone (without --purge): only its calls are mocked.
    let kinds = crate::ecs::kinds("apps", "web", false);
    let found = crate::delete::discover(&ctx, &kinds, &Phase::ALL).await.unwrap();
    assert_eq!(found.len(), 1);
    let report = crate::delete::sweep(&ctx, found, true, &opts, &crate::progress::Silent)
        .await
        .unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let err = &report.errors[0];
    assert!(
        err.chain()
            .any(|c| c.downcast_ref::<crate::engine::executor::TimedOut>().is_some()),
        "a deadline, typed: {err:#}"
    );
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ecs-service web") && msg.contains("draining tasks"),
        "{msg}"
    );
    // Listed, asked to delete, then asked again at the deadline (its next look, 5 s on, would pass it).
    assert!(draining.num_calls() >= 3, "looked again at the deadline");
}
