//! The AWS backend: Athena queries, Glue crawlers and jobs, through the official SDK.
//!
//! [`Aws::connect`] loads the standard credential and region chain (environment,
//! profile, instance role), with the workflow's `aws:` block on top (`region`,
//! `profile`). `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_ATHENA`, `_GLUE`, `_STS`) is
//! honoured by the SDK itself: that is how the tests point everything at moto.
//!
//! Every long operation polls with [`Backoff`] (100 ms at first, growing by half each
//! time to a 5 s cap: a quick query costs a few calls, an hour-long one about 720) and
//! stops the remote work when its cancellation token fires (a task's timeout or a
//! cancelled run): StopQueryExecution, StopCrawler, BatchStopJobRun. Throttling and
//! transient errors are retried by the SDK's standard retry mode (5 attempts).

mod athena;
pub mod fake;
mod glue;
pub mod s3;
pub use s3::lake_store;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;
use tokio_util::sync::CancellationToken;

pub use athena::{QueryOutcome, QueryResults};
pub use glue::{CrawlOutcome, GlueTable, JobOutcome};

/// The workflow's `aws:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Athena workgroup (default `primary`).
    pub workgroup: Option<String>,
    /// Glue database the tables live in.
    pub database: Option<String>,
    /// `s3://...` where Athena writes query results.
    pub output_location: Option<String>,
    /// `s3://...` where created tables live.
    pub warehouse: Option<String>,
}

/// Why an AWS operation did not succeed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0}")]
    Call(String),
    #[error("Athena query {id} {state}: {reason}")]
    QueryFailed {
        id: String,
        state: String,
        reason: String,
    },
    #[error("stopped: {0}")]
    Cancelled(String),
}

/// Clients for one workflow's account and region. Cheap to clone: clones share the SDK
/// config, the clients and their connection pools.
#[derive(Clone)]
pub struct Aws {
    sdk: aws_config::SdkConfig,
    athena: aws_sdk_athena::Client,
    glue: aws_sdk_glue::Client,
    pub settings: Settings,
    /// S3 clients by bucket.
    buckets: std::sync::Arc<
        std::sync::Mutex<
            std::collections::HashMap<String, std::sync::Arc<object_store::aws::AmazonS3>>,
        >,
    >,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// The process's clients for `settings`: the SDK config (credential chain, region,
    /// HTTP client) is loaded once per distinct `aws:` block and reused by every task
    /// after, instead of once per task run.
    pub async fn shared(settings: Settings) -> Aws {
        type Cells =
            std::collections::HashMap<Settings, std::sync::Arc<tokio::sync::OnceCell<Aws>>>;
        static SHARED: std::sync::OnceLock<std::sync::Mutex<Cells>> = std::sync::OnceLock::new();
        let cell = {
            let mut cells = match SHARED.get_or_init(Default::default).lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            cells.entry(settings.clone()).or_default().clone()
        };
        cell.get_or_init(|| Aws::connect(settings)).await.clone()
    }

    /// New clients for `settings` (see [`Aws::shared`] for the ones a process reuses).
    pub async fn connect(settings: Settings) -> Aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            // Every client and credential provider made from this config uses it.
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        let sdk = loader.load().await;
        Aws {
            athena: aws_sdk_athena::Client::new(&sdk),
            glue: aws_sdk_glue::Client::new(&sdk),
            sdk,
            settings,
            buckets: Default::default(),
        }
    }

    /// With `ORCHESTRATOR_REQUIRE_ENDPOINT` set (the tests set it), refuses to call
    /// anything unless `AWS_ENDPOINT_URL` points somewhere: a test that forgot its local
    /// endpoint fails instead of reaching AWS.
    pub fn guard(&self) -> Result<(), AwsError> {
        s3::require_endpoint()
    }

    /// The Athena client. Calls made with it directly skip [`Aws::guard`]: call that first.
    pub fn athena(&self) -> &aws_sdk_athena::Client {
        &self.athena
    }

    /// The Glue client. Calls made with it directly skip [`Aws::guard`]: call that first.
    pub fn glue(&self) -> &aws_sdk_glue::Client {
        &self.glue
    }

    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk)
    }

    /// Publishes `message` to the SNS topic `topic_arn`, with `subject` (made what SNS
    /// accepts: printable ASCII, at most 100 characters). Returns SNS's message id.
    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<String, AwsError> {
        self.guard()?;
        let subject: String = subject
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(100)
            .collect();
        let out = self
            .sns()
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| {
                AwsError::Call(format!("SNS Publish to {topic_arn}: {}", sdk_error(&e)))
            })?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    pub fn workgroup(&self) -> &str {
        self.settings.workgroup.as_deref().unwrap_or("primary")
    }

    /// `orchestrator doctor`: cheap read-only calls, each answered with what it found or
    /// exactly what is missing or forbidden. `Ok` lines and `Err` lines, in order.
    pub async fn doctor(&self) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        if let Err(e) = self.guard() {
            return vec![Err(e.to_string())];
        }
        match self.region() {
            Some(r) => out.push(Ok(format!("region: {r}"))),
            None => out.push(Err(
                "no region: set `aws: region:` in the workflow, or AWS_REGION".to_string(),
            )),
        }
        let sts = aws_sdk_sts::Client::new(&self.sdk);
        match sts.get_caller_identity().send().await {
            Ok(id) => out.push(Ok(format!(
                "credentials: {} (account {})",
                id.arn().unwrap_or("?"),
                id.account().unwrap_or("?")
            ))),
            Err(e) => out.push(Err(format!(
                "credentials: sts:GetCallerIdentity failed: {}; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or `aws: profile:`",
                short_error(&e)
            ))),
        }
        match &self.settings.database {
            Some(db) => match self.glue().get_database().name(db).send().await {
                Ok(_) => out.push(Ok(format!("Glue database `{db}`: found"))),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_entity_not_found_exception()) =>
                {
                    out.push(Err(format!(
                        "Glue database `{db}` does not exist: create it (aws glue create-database --database-input Name={db}) or set `aws: database:`"
                    )))
                }
                Err(e) => out.push(Err(format!(
                    "Glue database `{db}`: glue:GetDatabase failed: {}; create it (aws glue create-database --database-input Name={db}) or fix `aws: database:`",
                    short_error(&e)
                ))),
            },
            None => out.push(Err("no `aws: database:`: the Glue database tables live in".into())),
        }
        let wg = self.workgroup().to_string();
        match self.athena().get_work_group().work_group(&wg).send().await {
            Ok(_) => out.push(Ok(format!("Athena workgroup `{wg}`: found"))),
            Err(e) => out.push(Err(format!(
                "Athena workgroup `{wg}`: athena:GetWorkGroup failed: {}; fix `aws: workgroup:`",
                short_error(&e)
            ))),
        }
        for (field, value) in [
            ("output_location", &self.settings.output_location),
            ("warehouse", &self.settings.warehouse),
        ] {
            match value {
                // One ListObjectsV2 of the prefix: the bucket exists and may be read.
                Some(v) if v.starts_with("s3://") => match self.reachable(v).await {
                    Ok(()) => out.push(Ok(format!("{field}: {v}: bucket found"))),
                    Err(why) => out.push(Err(format!("`aws: {field}:` {v}: {why}"))),
                },
                Some(v) => out.push(Err(format!("`aws: {field}:` `{v}` is not an s3:// URL"))),
                None => out.push(Err(format!("no `aws: {field}:` (an s3:// URL)"))),
            }
        }
        out
    }
}

/// An SDK error with its whole chain of causes (the top level alone says "service error").
pub(crate) fn sdk_error<E: std::error::Error>(e: &E) -> String {
    aws_sdk_athena::error::DisplayErrorContext(e).to_string()
}

/// An SDK error for a person: the service's code and message when it answered (e.g.
/// `AccessDeniedException: User ... is not authorized`), else the cause chain cut to a
/// line, never the request's debug dump.
pub(crate) fn short_error<E>(e: &E) -> String
where
    E: std::error::Error + aws_sdk_athena::error::ProvideErrorMetadata,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let text = sdk_error(e);
            let cut: String = text.chars().take(300).collect();
            if cut.len() < text.len() {
                format!("{cut}…")
            } else {
                cut
            }
        }
    }
}

/// Poll intervals: 100 ms, then half as long again each time, up to 5 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
    /// Status calls made so far.
    pub polls: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            polls: 0,
        }
    }
}

impl Backoff {
    /// Waits for the next poll; `false` if `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next;
        self.next = (self.next.mul_f64(1.5)).min(self.cap);
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// The intervals it would wait, for tests and docs.
    pub fn schedule(n: usize) -> Vec<Duration> {
        let mut b = Backoff::default();
        (0..n)
            .map(|_| {
                let d = b.next;
                b.next = (b.next.mul_f64(1.5)).min(b.cap);
                d
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_sdk_config_per_aws_block_per_process() {
        let block = |region: &str| Settings {
            region: Some(region.into()),
            database: Some("stock".into()),
            ..Settings::default()
        };
        let a = Aws::shared(block("us-east-1")).await;
        let b = Aws::shared(block("us-east-1")).await;
        let c = Aws::shared(block("eu-west-1")).await;
        // Clones of one connection share its S3 client cache; another block has its own.
        assert!(std::sync::Arc::ptr_eq(&a.buckets, &b.buckets));
        assert!(!std::sync::Arc::ptr_eq(&a.buckets, &c.buckets));
        assert_eq!(c.region().as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn polling_starts_fast_and_grows_to_a_cap() {
        let s = Backoff::schedule(20);
        assert_eq!(s[0], Duration::from_millis(100));
        assert_eq!(s[1], Duration::from_millis(150));
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*s.last().unwrap(), Duration::from_secs(5));
        // An hour-long query: about 720 polls at the cap, not 36,000 at 100 ms.
        let first_minute: Duration = s.iter().take(12).sum();
        assert!(first_minute < Duration::from_secs(60), "{first_minute:?}");
    }
}
