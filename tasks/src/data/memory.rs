//! The embedded engine's memory budget for sorts: one pool per process, in every
//! session's DataFusion runtime; beyond it sorts spill to the OS's temporary directory.
//!
//! Without a budget DataFusion holds a sort's whole input in memory: the 5 M-row WAP
//! benchmark's `create_temp` (a sort by symbol and date under its window functions)
//! peaked at ~1 GB of RSS, above DuckDB's ~840 MB for the same work. With one, a sort
//! that reaches its share writes its sorted runs to disk and merges them back as one
//! sequential pass: `create_temp` peaks at ~710–760 MB in the same time (512 MiB), and at
//! 650–670 MB with 256 MiB, still in the same time: the sort is one pass over ~300 MB of
//! rows, so spilling half of it costs a sequential write and read the scan hides.
//!
//! Only sorts are bounded ([`SortBudget`]), shared fairly among those running (as
//! DataFusion's `FairSpillPool` does); everything else is counted, not refused:
//! - a pool that bounds every operator fails queries: with a 256 MB `FairSpillPool` the
//!   benchmark's sorts held their shares while the Parquet writer (which cannot spill)
//!   asked for 64 KB more, and `create_temp` failed with "Resources exhausted";
//! - an aggregation that spills sorts and re-reads its state: with the same 512 MB for
//!   aggregations too, the audit's uniqueness check and publish's key count (5 M and 10 M
//!   groups) took 1.1 s each instead of 0.4 s, for a peak (~640 MB) below the sort's.
//!
//! `ORCHESTRATOR_SORT_MEMORY_MB` sets the budget in MiB (as `ORCHESTRATOR_QUERY_MEMORY_MB`
//! bounds the UI's queries), or `unlimited`. The default is [`DEFAULT_LIMIT`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// The environment variable that sets the budget.
pub const VAR: &str = "ORCHESTRATOR_SORT_MEMORY_MB";

/// The budget when [`VAR`] is not set.
pub const DEFAULT_LIMIT: u64 = 256 * 1024 * 1024;

/// [`VAR`] could not be read as a size.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{VAR}={value:?} is not a budget for sorts: {why}; write a number of MiB such as 512 or 2048, or `unlimited`")]
pub struct LimitError {
    pub value: String,
    pub why: String,
}

/// Reads a budget: a whole number of MiB, at least 32, or `unlimited` (`None`).
pub fn parse_limit(text: &str) -> Result<Option<u64>, LimitError> {
    let err = |why: &str| LimitError {
        value: text.to_string(),
        why: why.to_string(),
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let mib: u64 = t.parse().map_err(|_| err("not a whole number of MiB"))?;
    // Below this no sort could hold even one batch: every query would fail.
    if mib < 32 {
        return Err(err("the smallest budget is 32 MiB"));
    }
    mib.checked_mul(1 << 20)
        .map(Some)
        .ok_or_else(|| err("too large"))
}

/// A runtime for one session: the process's one [`SortBudget`] (made at first use from
/// [`VAR`]; an invalid value is reported by every query that would use it, so the run
/// that meets it says what to fix), spill files in the OS's temporary directory, and
/// caches of its own. Only the pool is shared: a runtime also caches file listings and
/// statistics, and a shared one served a table's files as they were before it was
/// rebuilt (a backfill's second day read the first day's deleted temp files).
pub fn runtime() -> Result<Arc<RuntimeEnv>, super::EngineError> {
    static POOL: OnceLock<Result<Option<Arc<dyn MemoryPool>>, LimitError>> = OnceLock::new();
    let pool = POOL
        .get_or_init(|| {
            let limit = match std::env::var(VAR) {
                Ok(text) => parse_limit(&text)?,
                Err(_) => Some(DEFAULT_LIMIT),
            };
            Ok(limit.map(|bytes| Arc::new(SortBudget::new(bytes as usize)) as Arc<dyn MemoryPool>))
        })
        .clone()?;
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(pool) = pool {
        builder = builder.with_memory_pool(pool);
    }
    Ok(builder.build_arc()?)
}

/// A pool that bounds sorts (fairly, as `FairSpillPool` does) and only counts the other
/// consumers.
#[derive(Debug)]
pub struct SortBudget {
    spill: FairSpillPool,
    budget: usize,
    other: AtomicUsize,
}

impl SortBudget {
    pub fn new(budget: usize) -> Self {
        SortBudget {
            spill: FairSpillPool::new(budget),
            budget,
            other: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for SortBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sort budget of {} MiB ({VAR}): {}",
            self.budget >> 20,
            self.spill
        )
    }
}

/// A sort's memory (DataFusion's `ExternalSorter[partition]`; its merge phase registers
/// `ExternalSorterMerge`, which cannot spill). `a_sort_over_its_budget_spills_*` fails if
/// DataFusion renames it.
fn bounded(consumer: &MemoryConsumer) -> bool {
    consumer.can_spill() && consumer.name().starts_with("ExternalSorter[")
}

impl MemoryPool for SortBudget {
    fn name(&self) -> &str {
        "sort_budget"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if bounded(consumer) {
            self.spill.register(consumer);
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if bounded(consumer) {
            self.spill.unregister(consumer);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        if bounded(reservation.consumer()) {
            self.spill.grow(reservation, additional);
        } else {
            self.other.fetch_add(additional, Ordering::Relaxed);
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        if bounded(reservation.consumer()) {
            self.spill.shrink(reservation, shrink);
        } else {
            self.other.fetch_sub(shrink, Ordering::Relaxed);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if bounded(reservation.consumer()) {
            self.spill.try_grow(reservation, additional)
        } else {
            self.other.fetch_add(additional, Ordering::Relaxed);
            Ok(())
        }
    }

    fn reserved(&self) -> usize {
        self.spill.reserved() + self.other.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_mib_or_unlimited() {
        assert_eq!(parse_limit("512").unwrap(), Some(512 << 20));
        assert_eq!(parse_limit(" 2048 ").unwrap(), Some(2048 << 20));
        assert_eq!(parse_limit("Unlimited").unwrap(), None);
        for bad in ["", "lots", "512MB", "1.5", "16", "-5", "99999999999999999"] {
            let e = parse_limit(bad).unwrap_err().to_string();
            assert!(e.contains(VAR) && e.contains("512 or 2048"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_sorts_are_refused() {
        let pool: Arc<dyn MemoryPool> = Arc::new(SortBudget::new(1000));
        let sort = MemoryConsumer::new("ExternalSorter[0]")
            .with_can_spill(true)
            .register(&pool);
        let writer = MemoryConsumer::new("ParquetSink(ArrowColumnWriter)").register(&pool);
        let groups = MemoryConsumer::new("GroupedHashAggregateStream[0]")
            .with_can_spill(true)
            .register(&pool);
        groups.try_grow(5000).unwrap();
        groups.shrink(5000);
        sort.try_grow(900).unwrap();
        assert!(
            sort.try_grow(200).is_err(),
            "a spilling operator stays in its budget"
        );
        writer.try_grow(10_000).unwrap();
        assert_eq!(pool.reserved(), 10_900);
        drop(writer);
        assert_eq!(pool.reserved(), 900);
        drop(sort);
        assert_eq!(pool.reserved(), 0);
    }

    /// The spills of every operator of `plan`.
    fn spills(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> usize {
        let own = plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
        own + plan.children().iter().map(|c| spills(c)).sum::<usize>()
    }

    /// Runs `sql`: the spills of its operators and its rows.
    async fn run(
        ctx: &datafusion::prelude::SessionContext,
        sql: &str,
    ) -> (usize, Vec<datafusion::arrow::record_batch::RecordBatch>) {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
            .await
            .unwrap();
        (spills(&plan), batches)
    }

    #[tokio::test]
    async fn a_sort_over_its_budget_spills_and_still_answers() {
        use datafusion::arrow::array::{Array, Int64Array};
        use datafusion::prelude::{SessionConfig, SessionContext};
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(SortBudget::new(4 << 20)))
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(2),
            runtime,
        );
        // 2 M shuffled integers: 16 MB as one column, four times the budget.
        let (spilled, batches) = run(
            &ctx,
            "SELECT (value * 7919) % 4000037 AS v FROM generate_series(1, 2000000) ORDER BY v",
        )
        .await;
        assert!(spilled > 0, "the sort spilled");
        let mut last = i64::MIN;
        let mut rows = 0;
        for b in &batches {
            let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..v.len() {
                assert!(v.value(i) >= last, "in order");
                last = v.value(i);
            }
            rows += v.len();
        }
        assert_eq!(rows, 2_000_000);
        // An aggregation over as much stays in memory.
        let (spilled, batches) = run(
            &ctx,
            "SELECT (value * 7919) % 4000037 AS v, count(*) FROM generate_series(1, 2000000) GROUP BY 1",
        )
        .await;
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            2_000_000
        );
        assert_eq!(spilled, 0, "the aggregation did not spill");
    }
}
