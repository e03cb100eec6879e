//! Glue: crawlers (the catalog of landed files) and jobs (Spark ETL).

use std::collections::HashMap;

use aws_sdk_glue::operation::get_crawler::GetCrawlerError;
use aws_sdk_glue::operation::get_table::GetTableError;
use aws_sdk_glue::operation::start_crawler::StartCrawlerError;
use aws_sdk_glue::types::{CrawlerState, CrawlerTargets, JobRunState, LastCrawlStatus, S3Target};
use tokio_util::sync::CancellationToken;

use crate::{sdk_error, Aws, AwsError, Backoff};

#[derive(Debug, Clone)]
pub struct CrawlOutcome {
    /// The crawler was created (or its target updated) by this call.
    pub created: bool,
    pub updated: bool,
    /// GetCrawler calls made while waiting.
    pub polls: u32,
    /// The last crawl's status as Glue reported it.
    pub status: String,
}

/// A table of the Glue Data Catalog, as the data kinds need it.
#[derive(Debug, Clone, PartialEq)]
pub struct GlueTable {
    /// (name, type) of each column, partition keys last.
    pub columns: Vec<(String, String)>,
    /// The table's `table_type` parameter (`ICEBERG` for an Iceberg table).
    pub table_type: Option<String>,
    /// Where its files are.
    pub location: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub run_id: String,
    pub polls: u32,
    pub state: String,
}

impl Aws {
    /// Table `name` of the workflow's Glue database, or `None` if it has no such table.
    pub async fn table(&self, name: &str) -> Result<Option<GlueTable>, AwsError> {
        self.guard()?;
        let db = self.settings.database.clone().unwrap_or_default();
        match self
            .glue()
            .get_table()
            .database_name(&db)
            .name(name)
            .send()
            .await
        {
            Ok(t) => {
                let Some(t) = t.table() else {
                    return Ok(None);
                };
                let sd = t.storage_descriptor();
                let columns = sd
                    .map(|sd| sd.columns())
                    .unwrap_or_default()
                    .iter()
                    .chain(t.partition_keys())
                    .map(|c| {
                        (
                            c.name().to_string(),
                            c.r#type().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                let table_type = t
                    .parameters()
                    .and_then(|p| p.get("table_type").or_else(|| p.get("TABLE_TYPE")))
                    .cloned();
                Ok(Some(GlueTable {
                    columns,
                    table_type,
                    location: sd.and_then(|sd| sd.location()).map(str::to_string),
                }))
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetTableError::EntityNotFoundException(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(AwsError::Call(format!(
                "glue:GetTable {db}.{name} failed: {}",
                sdk_error(&e)
            ))),
        }
    }

    /// Runs crawler `name` over `path` (s3://...), creating it (with `role`) or pointing
    /// it at `path` first if needed, and waits until it is READY again. A crawl already
    /// running (CrawlerRunningException) is waited for instead of failing.
    pub async fn crawl(
        &self,
        name: &str,
        path: &str,
        role: Option<&str>,
        table_prefix: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<CrawlOutcome, AwsError> {
        self.crawl_reporting(name, path, role, table_prefix, cancel, &|_| {})
            .await
    }

    /// [`Aws::crawl`], saying every 30 s of waiting what state the crawler is in (a crawl
    /// takes minutes; a task that prints nothing meanwhile looks stuck).
    pub async fn crawl_reporting(
        &self,
        name: &str,
        path: &str,
        role: Option<&str>,
        table_prefix: Option<&str>,
        cancel: &CancellationToken,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<CrawlOutcome, AwsError> {
        self.guard()?;
        let glue = self.glue();
        let database = self.settings.database.clone().ok_or_else(|| {
            AwsError::Call(
                "`aws: database:` is needed: the Glue database the crawler writes to".into(),
            )
        })?;
        let targets = CrawlerTargets::builder()
            .s3_targets(S3Target::builder().path(path).build())
            .build();
        let (mut created, mut updated) = (false, false);
        match glue.get_crawler().name(name).send().await {
            Ok(found) => {
                let current: Vec<String> = found
                    .crawler()
                    .and_then(|c| c.targets())
                    .map(|t| {
                        t.s3_targets()
                            .iter()
                            .filter_map(|s| s.path().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if current != [path.to_string()] {
                    let mut update = glue
                        .update_crawler()
                        .name(name)
                        .targets(targets.clone())
                        .database_name(&database);
                    if let Some(role) = role {
                        update = update.role(role);
                    }
                    update.send().await.map_err(|e| {
                        AwsError::Call(format!(
                            "glue:UpdateCrawler {name} failed: {}",
                            sdk_error(&e)
                        ))
                    })?;
                    updated = true;
                }
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetCrawlerError::EntityNotFoundException(_))
                ) =>
            {
                let role = role.ok_or_else(|| {
                    AwsError::Call(format!(
                        "crawler `{name}` does not exist; give `role:` (an IAM role Glue may assume to read {path}) so it can be created"
                    ))
                })?;
                let mut create = glue
                    .create_crawler()
                    .name(name)
                    .role(role)
                    .database_name(&database)
                    .targets(targets);
                if let Some(prefix) = table_prefix {
                    create = create.table_prefix(prefix);
                }
                create.send().await.map_err(|e| {
                    AwsError::Call(format!(
                        "glue:CreateCrawler {name} failed: {}",
                        sdk_error(&e)
                    ))
                })?;
                created = true;
            }
            Err(e) => {
                return Err(AwsError::Call(format!(
                    "glue:GetCrawler {name} failed: {}",
                    sdk_error(&e)
                )))
            }
        }
        match glue.start_crawler().name(name).send().await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(StartCrawlerError::CrawlerRunningException(_))
                ) =>
            {
                tracing::info!("crawler {name} is already running; waiting for that crawl");
            }
            Err(e) => {
                return Err(AwsError::Call(format!(
                    "glue:StartCrawler {name} failed: {}",
                    sdk_error(&e)
                )))
            }
        }
        let mut backoff = Backoff::default();
        let started = std::time::Instant::now();
        let mut reported = started;
        loop {
            if !backoff.wait(cancel).await {
                let how = match glue.stop_crawler().name(name).send().await {
                    Ok(_) => "StopCrawler sent".to_string(),
                    Err(e) => format!("StopCrawler failed: {}", sdk_error(&e)),
                };
                return Err(AwsError::Cancelled(format!("crawler {name}: {how}")));
            }
            backoff.polls += 1;
            let got = glue.get_crawler().name(name).send().await.map_err(|e| {
                AwsError::Call(format!("glue:GetCrawler {name} failed: {}", sdk_error(&e)))
            })?;
            let crawler = got.crawler();
            if crawler.and_then(|c| c.state()) != Some(&CrawlerState::Ready) {
                if reported.elapsed() >= std::time::Duration::from_secs(30) {
                    reported = std::time::Instant::now();
                    progress(&format!(
                        "crawler {name}: {} after {}s ({} status calls)",
                        crawler
                            .and_then(|c| c.state())
                            .map_or("UNKNOWN", |s| s.as_str()),
                        started.elapsed().as_secs(),
                        backoff.polls
                    ));
                }
                continue;
            }
            let last = crawler.and_then(|c| c.last_crawl());
            let status = last
                .and_then(|l| l.status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into());
            return match last.and_then(|l| l.status()) {
                // Real Glue says SUCCEEDED; moto says COMPLETED, which AWS never does.
                Some(LastCrawlStatus::Succeeded) => Ok(CrawlOutcome {
                    created,
                    updated,
                    polls: backoff.polls,
                    status,
                }),
                Some(LastCrawlStatus::Failed | LastCrawlStatus::Cancelled) => {
                    Err(AwsError::Call(format!(
                        "crawler {name}: last crawl {status}: {}",
                        last.and_then(|l| l.error_message())
                            .unwrap_or("Glue gave no reason")
                    )))
                }
                _ if status == "COMPLETED" => Ok(CrawlOutcome {
                    created,
                    updated,
                    polls: backoff.polls,
                    status,
                }),
                _ => Err(AwsError::Call(format!(
                    "crawler {name}: READY, but its last crawl's status is {status}"
                ))),
            };
        }
    }

    /// Starts Glue job `job` with `arguments` (`--key` → value) and waits for the run to
    /// end. A failed run's error carries the job's ErrorMessage.
    pub async fn job_run(
        &self,
        job: &str,
        arguments: &HashMap<String, String>,
        cancel: &CancellationToken,
    ) -> Result<JobOutcome, AwsError> {
        self.guard()?;
        let glue = self.glue();
        let started = glue
            .start_job_run()
            .job_name(job)
            .set_arguments((!arguments.is_empty()).then(|| arguments.clone()))
            .send()
            .await
            .map_err(|e| {
                AwsError::Call(format!("glue:StartJobRun {job} failed: {}", sdk_error(&e)))
            })?;
        let run_id = started
            .job_run_id()
            .ok_or_else(|| AwsError::Call("Glue returned no job run id".into()))?
            .to_string();
        let mut backoff = Backoff::default();
        loop {
            if !backoff.wait(cancel).await {
                let stop = glue
                    .batch_stop_job_run()
                    .job_name(job)
                    .job_run_ids(&run_id)
                    .send()
                    .await;
                let how = match stop {
                    Ok(_) => "BatchStopJobRun sent".to_string(),
                    Err(e) => format!("BatchStopJobRun failed: {}", sdk_error(&e)),
                };
                return Err(AwsError::Cancelled(format!(
                    "Glue job {job} run {run_id}: {how}"
                )));
            }
            backoff.polls += 1;
            let got = glue
                .get_job_run()
                .job_name(job)
                .run_id(&run_id)
                .send()
                .await
                .map_err(|e| {
                    AwsError::Call(format!(
                        "glue:GetJobRun {job} {run_id} failed: {}",
                        sdk_error(&e)
                    ))
                })?;
            let run = got.job_run();
            let state = run.and_then(|r| r.job_run_state());
            let name = state.map_or("UNKNOWN", |s| s.as_str()).to_string();
            match state {
                Some(JobRunState::Succeeded) => {
                    return Ok(JobOutcome {
                        run_id,
                        polls: backoff.polls,
                        state: name,
                    })
                }
                Some(
                    JobRunState::Failed
                    | JobRunState::Error
                    | JobRunState::Timeout
                    | JobRunState::Stopped
                    | JobRunState::Expired,
                ) => {
                    return Err(AwsError::Call(format!(
                        "Glue job {job} run {run_id} {name}: {}",
                        run.and_then(|r| r.error_message())
                            .unwrap_or("Glue gave no error message")
                    )))
                }
                _ => {}
            }
        }
    }
}
