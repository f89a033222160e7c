//! The one place kforge reaches AWS from: a single `SdkConfig` from the standard chain (env, profiles, SSO, IMDS),
//! clients built once and shared, adaptive retries, and [`CloudError`], which names the resource, the operation, the
//! AWS error code and what to do about it.

pub mod eks;
pub mod eks_token;
pub mod inventory;
pub mod tags;

use std::error::Error as StdError;
use std::fmt;
use std::sync::OnceLock;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// Where and as whom to call AWS; all optional, falling back to the standard chain.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// `--endpoint-url`; `AWS_ENDPOINT_URL` is honoured by the SDK itself.
    pub endpoint_url: Option<String>,
}

/// Shared AWS clients for one region (a clone shares the clients made so far).
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
    endpoint_url: Option<String>,
    ec2: OnceLock<aws_sdk_ec2::Client>,
    eks: OnceLock<aws_sdk_eks::Client>,
    elbv2: OnceLock<aws_sdk_elasticloadbalancingv2::Client>,
    elb: OnceLock<aws_sdk_elasticloadbalancing::Client>,
    iam: OnceLock<aws_sdk_iam::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    autoscaling: OnceLock<aws_sdk_autoscaling::Client>,
    ssm: OnceLock<aws_sdk_ssm::Client>,
    ecr: OnceLock<aws_sdk_ecr::Client>,
    ecs: OnceLock<aws_sdk_ecs::Client>,
    logs: OnceLock<aws_sdk_cloudwatchlogs::Client>,
}

/// Retry attempts when neither `AWS_MAX_ATTEMPTS` nor a profile says otherwise. Infrastructure runs make many
/// calls; the SDK's default of 3 turns a short throttling burst into a failed run.
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// First retry delay (jittered: a random share of it, doubling per attempt up to [`MAX_BACKOFF`]). The SDK's
/// standard mode starts at 1 s; a create runs a dozen dependency levels of parallel calls, and a level waits for
/// its slowest call, so under 30 % throttling nearly every level would wait out a full first backoff. 200 ms keeps
/// the first retries quick; the doubling still reaches seconds for a service that keeps refusing.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Retry quota of the run (the SDK's default is 500, 5 per retry, given back when a retried call succeeds):
/// under sustained throttling a cluster's few hundred calls drained it, after which calls failed without a
/// retry. Still bounded, so an endpoint that fails everything is not retried forever.
const RETRY_QUOTA: usize = 5_000;
/// Longest a single AWS API call may take before it is abandoned and retried; API calls are small.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The config builder of SDK crate `$sdk` from the run's config, its calls counted and sharing the run's retry quota.
macro_rules! counted {
    ($sdk:ident, $config:expr) => {
        $sdk::config::Builder::from($config)
            .interceptor(CountAttempts)
            .retry_partition(retry_partition())
    };
}

/// A client of SDK crate `$sdk` built as [`counted!`] says.
macro_rules! client {
    ($sdk:ident, $config:expr) => {
        $sdk::Client::from_conf(counted!($sdk, $config).build())
    };
}

/// Tests: a client of SDK crate `$sdk` that answers only from aws-smithy-mocks `$rules` (anything iterating over
/// `&Rule` or `&&Rule`), matched as `$mode` (a `RuleMode`) says; no request leaves the process.
#[cfg(test)]
macro_rules! mock_client {
    ($sdk:ident, $mode:expr, $rules:expr) => {{
        let mut interceptor = aws_smithy_mocks::MockResponseInterceptor::new().rule_mode($mode);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        $sdk::Client::from_conf(
            $sdk::Config::builder()
                .behavior_version_latest()
                .region($sdk::config::Region::new("us-east-1"))
                .credentials_provider($sdk::config::Credentials::new("a", "b", None, None, "test"))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor)
                .build(),
        )
    }};
}
#[cfg(test)]
pub(crate) use mock_client;

impl Aws {
    pub async fn load(opts: &AwsOptions) -> Aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(u) = &opts.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() && std::env::var_os("AWS_RETRY_MODE").is_none() {
            // Standard mode, not adaptive: adaptive's client-side rate limiter takes every throttled answer as a
            // sign to slow all calls of the process, and under sustained throttling (20-30 % of calls) it made a
            // selfbuilt-ha infrastructure create ~35x slower (bench/throttled-create: 5.5 s clean, 192 s; now ~2x).
            loader = loader.retry_config(
                RetryConfig::standard()
                    .with_max_attempts(DEFAULT_MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            );
        }
        // Without an attempt timeout a stalled connection would wait forever; an attempt that times out is retried.
        loader = loader.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
        let config = loader.load().await;
        let endpoint_url = opts
            .endpoint_url
            .clone()
            .or_else(|| config.endpoint_url().map(str::to_string));
        Aws {
            config,
            endpoint_url,
            ec2: OnceLock::new(),
            eks: OnceLock::new(),
            elbv2: OnceLock::new(),
            elb: OnceLock::new(),
            iam: OnceLock::new(),
            s3: OnceLock::new(),
            autoscaling: OnceLock::new(),
            ssm: OnceLock::new(),
            ecr: OnceLock::new(),
            ecs: OnceLock::new(),
            logs: OnceLock::new(),
        }
    }

    pub fn credentials_provider(&self) -> Option<aws_credential_types::provider::SharedCredentialsProvider> {
        self.config.credentials_provider()
    }

    /// An `Aws` whose EC2 client is given (tests: a client answering from aws-smithy-mocks rules).
    #[cfg(test)]
    pub(crate) fn with_ec2(ec2: aws_sdk_ec2::Client) -> Aws {
        Aws::with_clients(Some(ec2), None, None)
    }

    /// An `Aws` with the given clients (tests: clients answering from aws-smithy-mocks rules); the others are never
    /// expected to be called.
    #[cfg(test)]
    pub(crate) fn with_clients(
        ec2: Option<aws_sdk_ec2::Client>,
        eks: Option<aws_sdk_eks::Client>,
        iam: Option<aws_sdk_iam::Client>,
    ) -> Aws {
        fn cell<T>(v: Option<T>) -> OnceLock<T> {
            let c = OnceLock::new();
            if let Some(v) = v {
                let _ = c.set(v);
            }
            c
        }
        Aws {
            config: SdkConfig::builder().region(Region::new("us-east-1")).build(),
            endpoint_url: None,
            ec2: cell(ec2),
            eks: cell(eks),
            elbv2: OnceLock::new(),
            elb: OnceLock::new(),
            iam: cell(iam),
            s3: OnceLock::new(),
            autoscaling: OnceLock::new(),
            ssm: OnceLock::new(),
            ecr: OnceLock::new(),
            ecs: OnceLock::new(),
            logs: OnceLock::new(),
        }
    }

    /// An `Aws` whose Auto Scaling client is given (tests: aws-smithy-mocks rules).
    #[cfg(test)]
    pub(crate) fn with_autoscaling(autoscaling: aws_sdk_autoscaling::Client) -> Aws {
        let aws = Aws::with_clients(None, None, None);
        let _ = aws.autoscaling.set(autoscaling);
        aws
    }

    /// An `Aws` whose classic Elastic Load Balancing client is given (tests: aws-smithy-mocks rules).
    #[cfg(test)]
    pub(crate) fn with_elb(elb: aws_sdk_elasticloadbalancing::Client) -> Aws {
        let aws = Aws::with_clients(None, None, None);
        let _ = aws.elb.set(elb);
        aws
    }

    /// An `Aws` whose ECS client is given (tests).
    #[cfg(test)]
    pub(crate) fn with_ecs(ecs: aws_sdk_ecs::Client) -> Aws {
        let aws = Aws::with_clients(None, None, None);
        let _ = aws.ecs.set(ecs);
        aws
    }

    pub fn region(&self) -> String {
        self.config.region().map(|r| r.to_string()).unwrap_or_default()
    }

    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        self.ec2.get_or_init(|| client!(aws_sdk_ec2, &self.config))
    }

    pub fn eks(&self) -> &aws_sdk_eks::Client {
        self.eks.get_or_init(|| client!(aws_sdk_eks, &self.config))
    }

    pub fn elbv2(&self) -> &aws_sdk_elasticloadbalancingv2::Client {
        self.elbv2
            .get_or_init(|| client!(aws_sdk_elasticloadbalancingv2, &self.config))
    }

    /// Classic load balancers (what Kubernetes' service controller makes by default).
    pub fn elb(&self) -> &aws_sdk_elasticloadbalancing::Client {
        self.elb
            .get_or_init(|| client!(aws_sdk_elasticloadbalancing, &self.config))
    }

    pub fn iam(&self) -> &aws_sdk_iam::Client {
        self.iam.get_or_init(|| client!(aws_sdk_iam, &self.config))
    }

    pub fn autoscaling(&self) -> &aws_sdk_autoscaling::Client {
        self.autoscaling
            .get_or_init(|| client!(aws_sdk_autoscaling, &self.config))
    }

    pub fn ssm(&self) -> &aws_sdk_ssm::Client {
        self.ssm.get_or_init(|| client!(aws_sdk_ssm, &self.config))
    }

    pub fn ecr(&self) -> &aws_sdk_ecr::Client {
        self.ecr.get_or_init(|| client!(aws_sdk_ecr, &self.config))
    }

    pub fn ecs(&self) -> &aws_sdk_ecs::Client {
        self.ecs.get_or_init(|| client!(aws_sdk_ecs, &self.config))
    }

    pub fn logs(&self) -> &aws_sdk_cloudwatchlogs::Client {
        self.logs.get_or_init(|| client!(aws_sdk_cloudwatchlogs, &self.config))
    }

    /// `aws`, `aws-cn` or `aws-us-gov`: the partition of ARNs in this region.
    pub fn partition(&self) -> &'static str {
        partition_of(&self.region())
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            let mut b = counted!(aws_sdk_s3, &self.config);
            // Emulators (moto, MinIO) on localhost have no virtual-host buckets.
            if self.endpoint_url.is_some() {
                b = b.force_path_style(true);
            }
            aws_sdk_s3::Client::from_conf(b.build())
        })
    }
}

/// The retry partition every client of the run shares: one quota of [`RETRY_QUOTA`] for the whole run.
fn retry_partition() -> aws_sdk_ec2::config::retry::RetryPartition {
    static PARTITION: OnceLock<aws_sdk_ec2::config::retry::RetryPartition> = OnceLock::new();
    PARTITION
        .get_or_init(|| {
            aws_sdk_ec2::config::retry::RetryPartition::custom("kforge")
                .token_bucket(
                    aws_smithy_runtime::client::retries::TokenBucket::builder()
                        .capacity(RETRY_QUOTA)
                        .build(),
                )
                .build()
        })
        .clone()
}

/// Counts AWS calls and their attempts for the run's summary at `-v`: how many attempts were retries, and how many
/// answers were HTTP 429/503 (throttling and unavailability; EC2's `RequestLimitExceeded` comes as a 503).
#[derive(Debug)]
struct CountAttempts;

static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BUSY_ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl aws_sdk_ec2::config::Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "kforge::CountAttempts"
    }
    fn read_before_execution(
        &self,
        _: &aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn read_before_attempt(
        &self,
        _: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn read_before_deserialization(
        &self,
        context: &aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        if matches!(context.response().status().as_u16(), 429 | 503) {
            BUSY_ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The run's AWS calls so far: (calls, attempts, attempts answered 429/503). Attempts beyond calls are retries.
pub fn call_counts() -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (CALLS.load(Relaxed), ATTEMPTS.load(Relaxed), BUSY_ANSWERS.load(Relaxed))
}

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A failed AWS call, as the user should read it.
#[derive(Debug, thiserror::Error)]
pub struct CloudError {
    /// The thing acted on: `vpc (vpc-0abc)`, `s3://bucket/key`.
    pub resource: String,
    pub operation: &'static str,
    /// The AWS error code (`DependencyViolation`), or `HTTP 503` / `ConnectionError` when there is none.
    pub code: String,
    pub message: String,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} failed: {}", self.resource, self.operation, self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        write!(f, "\n  hint: {}", hint_for(&self.code))
    }
}

/// What to do about an AWS error code.
fn hint_for(code: &str) -> &'static str {
    match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            "the credentials lack a permission: grant it to the IAM principal kforge runs as"
        }
        "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "UnrecognizedClientException" => {
            "the AWS credentials are not valid: check AWS_PROFILE / --profile or the access keys"
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "the session has expired: log in again (e.g. `aws sso login`)"
        }
        "DependencyViolation" => "something else still uses this resource; delete what depends on it first",
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequestsException" => {
            "AWS kept throttling after every retry; lower --concurrency or try again later"
        }
        "NoSuchBucket" => "create the state bucket first (with versioning), or fix the --state URL",
        "ConnectionError" => {
            "AWS could not be reached: check the network, --endpoint-url / AWS_ENDPOINT_URL and --region"
        }
        "Timeout" => "the call timed out: check the network and --endpoint-url",
        c if c.ends_with("LimitExceeded") => "an account quota is reached: raise it in Service Quotas or free some",
        c if c.starts_with("InvalidParameter") || c.starts_with("Invalid") => {
            "AWS rejected a value: check the spec field it comes from"
        }
        c if c.starts_with("HTTP 5") => "the AWS endpoint failed; re-run the command, it resumes where it stopped",
        c if c.starts_with("HTTP ") => "the endpoint answered with a non-AWS response: is --endpoint-url an AWS API?",
        _ => "see the AWS message above; re-running the command resumes where it stopped",
    }
}

/// Converts an SDK error into a [`CloudError`] for `resource`.
pub fn cloud_error<E, R>(resource: impl fmt::Display, operation: &'static str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    let (code, message) = match &err {
        SdkError::ServiceError(_) => match err.code() {
            Some(code) => (code.to_string(), err.message().unwrap_or_default().to_string()),
            // Unparseable bodies (an HTML page from a proxy or an emulator lacking the call).
            None => (
                err.raw_response()
                    .map(|r| format!("HTTP {}", r.status_code()))
                    .unwrap_or_else(|| "Unknown".into()),
                "the response was not an AWS error document".into(),
            ),
        },
        SdkError::DispatchFailure(_) => ("ConnectionError".into(), crate::errors::causes(&err)),
        SdkError::TimeoutError(_) => ("Timeout".into(), crate::errors::causes(&err)),
        SdkError::ResponseError(_) => (
            err.raw_response()
                .map(|r| format!("HTTP {}", r.status_code()))
                .unwrap_or_else(|| "BadResponse".into()),
            crate::errors::causes(&err),
        ),
        _ => ("RequestError".into(), crate::errors::causes(&err)),
    };
    CloudError {
        resource: resource.to_string(),
        operation,
        code,
        message,
    }
}

/// Status code of a raw HTTP response, abstracted so [`cloud_error`] works for every client.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Shorthand: `.map_err(aws_err("vpc (vpc-1)", "DeleteVpc"))`.
pub fn aws_err<E, R>(resource: impl fmt::Display, operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    move |e| cloud_error(resource, operation, e)
}

/// The AWS error code inside an `anyhow` chain, if any.
pub fn error_code(err: &anyhow::Error) -> Option<&str> {
    cloud_error_in(err).map(|c| c.code.as_str())
}

fn cloud_error_in(err: &anyhow::Error) -> Option<&CloudError> {
    err.chain().find_map(|e| e.downcast_ref::<CloudError>())
}

/// What an AWS error means to kforge, whichever service said it and however it spells it: the one place that
/// knows `InvalidVpcID.NotFound`, `ResourceNotFoundException`, `TargetGroupNotFound` and `NoSuchEntity` all say
/// "not there".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The resource does not exist (or no longer does).
    NotFound,
    /// Something else still uses it, or it is busy with another operation.
    InUse,
    /// What the call names was made a moment ago and this service does not see it yet (IAM roles, mostly).
    NotYetVisible,
    /// AWS asked to slow down, after every retry.
    Throttled,
    /// The credentials are missing a permission or are not valid.
    Auth,
    Other,
}

/// The class of an error `code` with its `message`.
pub fn classify(code: &str, message: &str) -> ErrorClass {
    match code {
        c if c.ends_with("NotFound") || c.ends_with("NotFoundException") => ErrorClass::NotFound,
        "NoSuchEntity" | "NoSuchKey" | "NoSuchBucket" => ErrorClass::NotFound,
        "DependencyViolation" | "ResourceInUseException" | "ResourceInUse" | "DeleteConflict" => ErrorClass::InUse,
        c if c.ends_with(".InUse") || c.ends_with("InUseException") => ErrorClass::InUse,
        // EKS, when the role it was handed was created a moment ago: "The role ... cannot be assumed", "Role is not
        // authorized to perform ...".
        "InvalidParameterException" if message.to_ascii_lowercase().contains("role") => ErrorClass::NotYetVisible,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequestsException" | "SlowDown" => {
            ErrorClass::Throttled
        }
        "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "ExpiredToken"
        | "ExpiredTokenException" => ErrorClass::Auth,
        _ => ErrorClass::Other,
    }
}

impl CloudError {
    pub fn class(&self) -> ErrorClass {
        classify(&self.code, &self.message)
    }
}

/// The class of the AWS error inside an `anyhow` chain ([`ErrorClass::Other`] when there is none).
pub fn class_of(err: &anyhow::Error) -> ErrorClass {
    cloud_error_in(err).map_or(ErrorClass::Other, CloudError::class)
}

/// Whether the AWS error inside `err` says the resource is not there.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    class_of(err) == ErrorClass::NotFound
}

/// The class of an SDK error before it became a [`CloudError`].
pub fn sdk_class(err: &impl ProvideErrorMetadata) -> ErrorClass {
    classify(err.code().unwrap_or_default(), err.message().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_resource_code_and_hint() {
        let e = CloudError {
            resource: "subnet/public-us-east-1a (subnet-1)".into(),
            operation: "DeleteSubnet",
            code: "DependencyViolation".into(),
            message: "has dependencies".into(),
        };
        let s = e.to_string();
        assert!(s.starts_with(
            "subnet/public-us-east-1a (subnet-1): DeleteSubnet failed: DependencyViolation: has dependencies"
        ));
        assert!(s.contains("hint: something else still uses"));
        let any: anyhow::Error = e.into();
        assert_eq!(error_code(&any.context("deleting")), Some("DependencyViolation"));
    }

    #[test]
    fn every_spelling_of_not_found_and_in_use_is_one_class() {
        for code in [
            "InvalidVpcID.NotFound",
            "InvalidGatewayID.NotFound",
            "InvalidAllocationID.NotFound",
            "InvalidLaunchTemplateName.NotFoundException",
            "ResourceNotFoundException",
            "TargetGroupNotFound",
            "ListenerNotFound",
            "LoadBalancerNotFound",
            "ClusterNotFoundException",
            "RepositoryNotFoundException",
            "LifecyclePolicyNotFoundException",
            "NoSuchEntity",
            "NoSuchKey",
        ] {
            assert_eq!(classify(code, ""), ErrorClass::NotFound, "{code}");
        }
        for code in [
            "DependencyViolation",
            "ResourceInUseException",
            "InvalidGroup.InUse",
            "DeleteConflict",
        ] {
            assert_eq!(classify(code, ""), ErrorClass::InUse, "{code}");
        }
        assert_eq!(
            classify("InvalidParameterException", "The role with name x cannot be assumed"),
            ErrorClass::NotYetVisible
        );
        assert_eq!(classify("InvalidParameterException", "bad subnet"), ErrorClass::Other);
        assert_eq!(classify("RequestLimitExceeded", ""), ErrorClass::Throttled);
        assert_eq!(classify("UnauthorizedOperation", ""), ErrorClass::Auth);
        assert_eq!(classify("HTTP 503", ""), ErrorClass::Other);
        let e: anyhow::Error = CloudError {
            resource: "vpc (vpc-1)".into(),
            operation: "DeleteVpc",
            code: "InvalidVpcID.NotFound".into(),
            message: String::new(),
        }
        .into();
        assert!(is_not_found(&e.context("deleting the network")));
        assert_eq!(class_of(&anyhow::anyhow!("no AWS in this")), ErrorClass::Other);
    }

    /// The retry policy of issue 18 (4): standard mode (adaptive's client-side rate limiter made runs under
    /// sustained throttling ~35x slower), a quick first backoff, and one quota shared by every client of the run.
    #[tokio::test]
    async fn retries_are_standard_with_a_quick_first_backoff_and_one_quota() {
        if std::env::var_os("AWS_MAX_ATTEMPTS").is_some() || std::env::var_os("AWS_RETRY_MODE").is_some() {
            return; // the environment's settings win, by design
        }
        let aws = Aws::load(&AwsOptions {
            region: Some("us-east-1".into()),
            profile: None,
            endpoint_url: Some("http://127.0.0.1:9".into()),
        })
        .await;
        let retry = aws.ec2().config().retry_config().expect("a retry config");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(retry.initial_backoff(), INITIAL_BACKOFF);
        assert_eq!(retry.max_backoff(), MAX_BACKOFF);
        let partition = aws
            .ec2()
            .config()
            .retry_partition()
            .expect("the run's partition")
            .to_string();
        assert_eq!(partition, "kforge");
        for other in [
            aws.s3().config().retry_partition(),
            aws.iam().config().retry_partition(),
            aws.autoscaling().config().retry_partition(),
        ] {
            assert_eq!(other.map(|p| p.to_string()).as_deref(), Some("kforge"));
        }
    }

    #[test]
    fn quota_and_http_hints() {
        assert!(hint_for("VpcLimitExceeded").contains("quota"));
        assert!(hint_for("HTTP 404").contains("non-AWS"));
        assert!(hint_for("HTTP 503").contains("re-run"));
    }
}
