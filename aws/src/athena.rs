//! Athena: start a query, poll it to the end (stopping it on cancellation), read results.

use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use tokio_util::sync::CancellationToken;

use crate::{sdk_error, Aws, AwsError, Backoff};

/// A query that ended `SUCCEEDED`.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    pub id: String,
    /// GetQueryExecution calls made while waiting.
    pub polls: u32,
    /// Bytes Athena scanned (what it bills for), when it says.
    pub scanned_bytes: Option<i64>,
}

/// Rows of a query's result: the header, then at most the rows asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResults {
    pub columns: Vec<String>,
    /// Each column's Athena type (`bigint`, `varchar`, `double`, ...), as `columns`.
    pub types: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// More rows existed than were read.
    pub truncated: bool,
    /// Rows a CREATE TABLE AS, INSERT INTO, MERGE, UPDATE or DELETE wrote, when Athena
    /// says (GetQueryResults' UpdateCount).
    pub update_count: Option<u64>,
}

impl Aws {
    /// Runs `sql` in the workflow's workgroup and database, writing results under
    /// `output_location`; waits for the end. Cancellation stops the query
    /// (StopQueryExecution) and returns [`AwsError::Cancelled`].
    pub async fn query(
        &self,
        sql: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryOutcome, AwsError> {
        self.guard()?;
        let client = self.athena();
        let mut start = client
            .start_query_execution()
            .query_string(sql)
            .work_group(self.workgroup());
        if let Some(db) = &self.settings.database {
            start = start
                .query_execution_context(QueryExecutionContext::builder().database(db).build());
        }
        if let Some(loc) = &self.settings.output_location {
            start = start
                .result_configuration(ResultConfiguration::builder().output_location(loc).build());
        }
        let started = start.send().await.map_err(|e| {
            AwsError::Call(format!(
                "athena:StartQueryExecution failed: {}",
                sdk_error(&e)
            ))
        })?;
        let id = started
            .query_execution_id()
            .ok_or_else(|| AwsError::Call("Athena returned no query execution id".into()))?
            .to_string();
        let mut backoff = Backoff::default();
        loop {
            backoff.polls += 1;
            let got = client
                .get_query_execution()
                .query_execution_id(&id)
                .send()
                .await
                .map_err(|e| {
                    AwsError::Call(format!(
                        "athena:GetQueryExecution {id} failed: {}",
                        sdk_error(&e)
                    ))
                })?;
            let exec = got.query_execution();
            let status = exec.and_then(|q| q.status());
            match status.and_then(|s| s.state()) {
                Some(QueryExecutionState::Succeeded) => {
                    return Ok(QueryOutcome {
                        id,
                        polls: backoff.polls,
                        scanned_bytes: exec
                            .and_then(|q| q.statistics())
                            .and_then(|s| s.data_scanned_in_bytes()),
                    })
                }
                Some(state @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                    return Err(AwsError::QueryFailed {
                        id,
                        state: state.as_str().to_string(),
                        reason: status
                            .and_then(|s| s.state_change_reason())
                            .unwrap_or("Athena gave no reason")
                            .to_string(),
                    })
                }
                _ => {}
            }
            if !backoff.wait(cancel).await {
                let stop = client
                    .stop_query_execution()
                    .query_execution_id(&id)
                    .send()
                    .await;
                let how = match stop {
                    Ok(_) => "StopQueryExecution sent".to_string(),
                    Err(e) => format!("StopQueryExecution failed: {}", sdk_error(&e)),
                };
                return Err(AwsError::Cancelled(format!("Athena query {id}: {how}")));
            }
        }
    }

    /// Reads at most `max_rows` rows of a finished query (GetQueryResults, page by page).
    /// The first row of a SELECT's results is its header.
    pub async fn results(&self, id: &str, max_rows: usize) -> Result<QueryResults, AwsError> {
        let mut out = QueryResults::default();
        self.read_results(
            id,
            &mut |row| {
                if out.rows.len() >= max_rows {
                    out.truncated = true;
                    return false;
                }
                out.rows.push(row);
                true
            },
            &mut out.columns,
            &mut out.types,
            &mut out.update_count,
        )
        .await?;
        Ok(out)
    }

    /// How many rows a finished query returned (every page read, none kept), and the
    /// UpdateCount Athena gave.
    pub async fn count_results(&self, id: &str) -> Result<(u64, Option<u64>), AwsError> {
        let (mut n, mut columns, mut types, mut update) = (0u64, Vec::new(), Vec::new(), None);
        self.read_results(
            id,
            &mut |_| {
                n += 1;
                true
            },
            &mut columns,
            &mut types,
            &mut update,
        )
        .await?;
        Ok((n, update))
    }

    /// Reads a finished query's results page by page, handing each row (the header row
    /// skipped) to `row` until it answers `false`.
    async fn read_results(
        &self,
        id: &str,
        row: &mut (dyn FnMut(Vec<Option<String>>) -> bool + Send),
        columns: &mut Vec<String>,
        types: &mut Vec<String>,
        update_count: &mut Option<u64>,
    ) -> Result<(), AwsError> {
        self.guard()?;
        let client = self.athena();
        let mut token: Option<String> = None;
        let mut first = true;
        loop {
            let page = client
                .get_query_results()
                .query_execution_id(id)
                .set_next_token(token.clone())
                .max_results(1000)
                .send()
                .await
                .map_err(|e| {
                    AwsError::Call(format!(
                        "athena:GetQueryResults {id} failed: {}",
                        sdk_error(&e)
                    ))
                })?;
            if first {
                *update_count = page.update_count().and_then(|n| u64::try_from(n).ok());
            }
            if let Some(set) = page.result_set() {
                if first {
                    let info = set
                        .result_set_metadata()
                        .map(|m| m.column_info())
                        .unwrap_or_default();
                    *columns = info.iter().map(|c| c.name().to_string()).collect();
                    *types = info.iter().map(|c| c.r#type().to_string()).collect();
                }
                for (i, r) in set.rows().iter().enumerate() {
                    let values: Vec<Option<String>> = r
                        .data()
                        .iter()
                        .map(|d| d.var_char_value().map(str::to_string))
                        .collect();
                    // The header row repeats the column names.
                    if first && i == 0 && !columns.is_empty() {
                        let names: Vec<Option<String>> =
                            columns.iter().cloned().map(Some).collect();
                        if values == names {
                            continue;
                        }
                    }
                    if !row(values) {
                        return Ok(());
                    }
                }
            }
            first = false;
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(()),
            }
        }
    }
}
