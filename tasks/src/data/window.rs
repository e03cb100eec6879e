//! Moving-window aggregates (`AVG`, `SUM`, `COUNT` over `ROWS BETWEEN n PRECEDING AND
//! m PRECEDING | CURRENT ROW`) computed a batch at a time.
//!
//! DataFusion evaluates a sliding window aggregate row by row: for every row it slices
//! the argument arrays, feeds the rows entering and leaving the frame to an accumulator
//! and boxes the result in a `ScalarValue`. On the reference pipeline's five moving
//! windows over 5 M rows that was 9.4 s of CPU, more than the CSV scan, the sort and the
//! Parquet write together. [`MovingWindows`] (a physical optimizer rule) hands those
//! expressions to [`MovingWindowExec`], which computes each frame straight from the
//! batch: a loop over at most `n + 1` values per row, no allocation per row.
//!
//! The rule only takes what it computes exactly as DataFusion defines it, and leaves
//! everything else of the plan alone:
//! - the window node's input is sorted on its PARTITION BY and ORDER BY keys (DataFusion's
//!   `Sorted` mode), so a partition is a run of consecutive rows;
//! - `ROWS` frames from a bounded `n PRECEDING` (or `CURRENT ROW`) to `m PRECEDING` or
//!   `CURRENT ROW`, with `m <= n <= MAX_PRECEDING`: never a following row, so each output
//!   row is known when its input row arrives and memory stays bounded (the last `n` rows
//!   of the current partition are carried to the next batch);
//! - `avg` and `sum` of a `Float64`, `count` of one argument, without DISTINCT or FILTER;
//! - `LAG(x [, n [, NULL]])` of any type, without IGNORE NULLS (the row `n` rows back in
//!   the partition, or NULL): DataFusion's evaluator for it costs about as much per row
//!   as a sliding aggregate did, this one is an Arrow `take` per batch.
//!
//! Other window expressions of the same node (`LEAD`, ranks, a `LAG` default) stay in DataFusion's operator,
//! stacked on this one; a projection restores the node's column order. Each frame is
//! summed afresh, so a value can differ from DataFusion's running sum in the last bits
//! (it is the more exact of the two); `same_results_as_datafusion` pins the rest.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    make_comparator, Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{concat, take, SortOptions};
use datafusion::arrow::datatypes::{DataType, Float64Type, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::window::{
    SlidingAggregateWindowExpr, StandardWindowExpr, WindowExpr,
};
use datafusion::physical_expr::{EquivalenceProperties, OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, InputOrderMode, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// Frames reaching further back than this stay with DataFusion: each row's frame is
/// summed afresh, which is cheap for the short windows of bar data (5, 20, 200 days) and
/// not for a frame of thousands of rows.
const MAX_PRECEDING: usize = 1024;

/// The physical optimizer rule; see the module docs.
#[derive(Debug, Default)]
pub struct MovingWindows;

impl MovingWindows {
    /// DataFusion's physical optimizer rules, with this one run just before the final
    /// sanity check (which then verifies the rewritten plan's orderings).
    pub fn with_default_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        let at = rules.len().saturating_sub(1);
        rules.insert(at, Arc::new(MovingWindows));
        rules
    }
}

impl PhysicalOptimizerRule for MovingWindows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(window) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match rewrite(window)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "moving_windows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Aggregate(Aggregate),
    /// The frame's one row (`preceding == until`), of any type.
    Lag,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Avg,
    Sum,
    Count,
}

/// One window expression this module computes.
#[derive(Debug, Clone)]
struct Moving {
    function: Function,
    arg: Arc<dyn PhysicalExpr>,
    /// The frame is rows `i - preceding ..= i - until` of the row's partition.
    preceding: usize,
    until: usize,
}

/// What of `expr` this module computes, if it can.
fn moving(expr: &Arc<dyn WindowExpr>, input: &Schema) -> Option<Moving> {
    if let Some(standard) = expr.as_any().downcast_ref::<StandardWindowExpr>() {
        return lag(expr, standard, input);
    }
    let sliding = expr.as_any().downcast_ref::<SlidingAggregateWindowExpr>()?;
    // The FILTER clause is private to DataFusion's expression; its Debug shows it.
    if !format!("{sliding:?}").contains("filter: None") {
        return None;
    }
    let aggregate = sliding.get_aggregate_expr();
    if aggregate.is_distinct() {
        return None;
    }
    let [arg] = <[_; 1]>::try_from(aggregate.expressions()).ok()?;
    let arg_type = arg.data_type(input).ok()?;
    let out_type = expr.field().ok()?.data_type().clone();
    let function = match (aggregate.fun().name(), &arg_type, &out_type) {
        ("avg", DataType::Float64, DataType::Float64) => Aggregate::Avg,
        ("sum", DataType::Float64, DataType::Float64) => Aggregate::Sum,
        ("count", _, DataType::Int64) => Aggregate::Count,
        _ => return None,
    };
    let frame = expr.get_window_frame();
    if frame.units != WindowFrameUnits::Rows {
        return None;
    }
    let offset = |bound: &WindowFrameBound| match bound {
        WindowFrameBound::CurrentRow => Some(0),
        WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))) => usize::try_from(*n).ok(),
        _ => None,
    };
    let (preceding, until) = (offset(&frame.start_bound)?, offset(&frame.end_bound)?);
    (until <= preceding && preceding <= MAX_PRECEDING).then_some(Moving {
        function: Function::Aggregate(function),
        arg,
        preceding,
        until,
    })
}

/// `LAG(x)`, `LAG(x, n)` or `LAG(x, n, NULL)`, as [`Function::Lag`].
fn lag(
    expr: &Arc<dyn WindowExpr>,
    standard: &StandardWindowExpr,
    input: &Schema,
) -> Option<Moving> {
    let udf = standard
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    if udf.fun().name() != "lag" {
        return None;
    }
    // IGNORE NULLS and a reversed evaluation (a LEAD turned around) are private to the
    // expression; its Debug shows them.
    let debug = format!("{udf:?}");
    if !debug.contains("is_reversed: false") || !debug.contains("ignore_nulls: false") {
        return None;
    }
    let literal =
        |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().map(|l| l.value().clone());
    let (arg, rest) = udf.args().split_first()?;
    let offset = match rest.first() {
        None => 1,
        Some(e) => match literal(e)?.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) => usize::try_from(n).ok()?,
            _ => return None,
        },
    };
    match rest.get(1) {
        None => {}
        Some(e) if literal(e)?.is_null() => {}
        Some(_) => return None,
    }
    let arg_type = arg.data_type(input).ok()?;
    (rest.len() <= 2 && offset <= MAX_PRECEDING && expr.field().ok()?.data_type() == &arg_type)
        .then(|| Moving {
            function: Function::Lag,
            arg: Arc::clone(arg),
            preceding: offset,
            until: offset,
        })
}

/// The plan replacing `window`, if any of its expressions is one this module computes.
fn rewrite(window: &BoundedWindowAggExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if window.input_order_mode != InputOrderMode::Sorted {
        return Ok(None);
    }
    let input = window.input();
    let input_schema = input.schema();
    let exprs = window.window_expr();
    let Some(first) = exprs.first() else {
        return Ok(None);
    };
    let found: Vec<Option<Moving>> = exprs.iter().map(|e| moving(e, &input_schema)).collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let (mut fast, mut fast_fields, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    // Where each of the node's expressions ends up: (computed here?, position there).
    let mut placed = Vec::with_capacity(exprs.len());
    for (expr, m) in exprs.iter().zip(found) {
        match m {
            Some(m) => {
                placed.push((true, fast.len()));
                fast.push(m);
                fast_fields.push(expr.field()?);
            }
            None => {
                placed.push((false, rest.len()));
                rest.push(Arc::clone(expr));
            }
        }
    }
    let required_ordering = window
        .required_input_ordering()
        .into_iter()
        .next()
        .flatten();
    let required_distribution = window.input_distribution_requirements();
    let spec = Spec {
        partition_by: first.partition_by().to_vec(),
        exprs: fast,
        fields: fast_fields,
        required_ordering,
        required_distribution,
    };
    let moving_exec: Arc<dyn ExecutionPlan> =
        Arc::new(MovingWindowExec::try_new(Arc::clone(input), spec)?);
    let n_input = input_schema.fields().len();
    let n_fast = moving_exec.schema().fields().len() - n_input;
    let mut plan = moving_exec;
    if !rest.is_empty() {
        plan = Arc::new(BoundedWindowAggExec::try_new(
            rest,
            plan,
            window.input_order_mode.clone(),
            !window.partition_keys().is_empty(),
        )?);
    }
    let in_order = placed
        .iter()
        .enumerate()
        .all(|(i, &(here, at))| here && at == i);
    if in_order {
        return Ok(Some(plan));
    }
    // Back to the node's own column order and names.
    let schema = window.schema();
    let columns: Vec<ProjectionExpr> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let from = match i.checked_sub(n_input).and_then(|k| placed.get(k)) {
                Some(&(true, at)) => n_input + at,
                Some(&(false, at)) => n_input + n_fast + at,
                None => i,
            };
            ProjectionExpr {
                expr: Arc::new(Column::new(field.name(), from)),
                alias: field.name().clone(),
            }
        })
        .collect();
    Ok(Some(Arc::new(ProjectionExec::try_new(columns, plan)?)))
}

/// Computes [`Moving`] expressions over input sorted by `partition_by` and the ORDER BY;
/// outputs the input's columns followed by one column per expression, batch for batch.
#[derive(Debug)]
pub struct MovingWindowExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Spec,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// Output rows and compute time, for `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`MovingWindowExec`] computes and what it asks of its input (the ordering and
/// distribution the window node it replaces asked for).
#[derive(Debug, Clone)]
struct Spec {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Moving>,
    fields: Vec<datafusion::arrow::datatypes::FieldRef>,
    required_ordering: Option<OrderingRequirements>,
    required_distribution: InputDistributionRequirements,
}

impl MovingWindowExec {
    fn try_new(input: Arc<dyn ExecutionPlan>, spec: Spec) -> Result<Self> {
        let input_schema = input.schema();
        let all: Vec<_> = input_schema
            .fields()
            .iter()
            .cloned()
            .chain(spec.fields.iter().cloned())
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            all,
            input_schema.metadata().clone(),
        ));
        let eq = EquivalenceProperties::new(Arc::clone(&schema))
            .extend(input.equivalence_properties().clone())?;
        let properties = Arc::new(PlanProperties::new(
            eq,
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Ok(Self {
            input,
            spec,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for MovingWindowExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.spec.fields.iter().map(|f| f.name().as_str()).collect();
        write!(f, "MovingWindowExec: [{}]", names.join(", "))
    }
}

impl ExecutionPlan for MovingWindowExec {
    fn name(&self) -> &str {
        "MovingWindowExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.spec.required_ordering.clone()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.spec.required_distribution.clone()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self
            .spec
            .exprs
            .iter()
            .map(|m| &m.arg)
            .chain(&self.spec.partition_by)
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!("MovingWindowExec has one child");
        }
        Ok(Arc::new(MovingWindowExec::try_new(
            children.swap_remove(0),
            self.spec.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = ReplaceChildrenOptions::new(
            datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
        );
        self.replace_children(children, options)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let mut state = Streaming {
            schema: Arc::clone(&self.schema),
            partition_by: self.spec.partition_by.clone(),
            exprs: self.spec.exprs.clone(),
            last_key: None,
            carried: self.spec.exprs.iter().map(|_| Carried::default()).collect(),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let out = input.map(move |batch| {
            let batch = batch?;
            let _timer = baseline.elapsed_compute().timer();
            let out = state.next(batch)?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            out,
        )))
    }
}

/// The last rows of the current partition one expression still needs (at most its
/// `preceding`), carried from one batch to the next.
#[derive(Default)]
struct Carried {
    values: Vec<f64>,
    valid: Vec<bool>,
    /// For [`Function::Lag`]: the rows themselves, of the argument's type.
    rows: Option<ArrayRef>,
}

struct Streaming {
    schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Moving>,
    /// The partition key of the previous batch's last row.
    last_key: Option<Vec<ArrayRef>>,
    carried: Vec<Carried>,
}

impl Streaming {
    fn next(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let keys = self
            .partition_by
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        // Runs of equal keys: the partitions (or parts of them) in this batch.
        let runs: Vec<std::ops::Range<usize>> = if keys.is_empty() {
            std::iter::once(0..rows).collect()
        } else {
            datafusion::arrow::compute::partition(&keys)?.ranges()
        };
        let continues = match &self.last_key {
            None => false,
            Some(_) if keys.is_empty() => true,
            Some(last) => same_key(last, &keys)?,
        };
        let mut columns = batch.columns().to_vec();
        for (m, carried) in self.exprs.iter().zip(self.carried.iter_mut()) {
            let arg = m.arg.evaluate(&batch)?.into_array(rows)?;
            columns.push(match m.function {
                Function::Lag => shift(m.preceding, carried, &arg, &runs, continues)?,
                Function::Aggregate(a) => aggregate(a, m, carried, &arg, &runs, continues),
            });
        }
        self.last_key = Some(keys.iter().map(|k| k.slice(rows - 1, 1)).collect());
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Whether row 0 of `keys` equals the one-row `last` (nulls equal, as in PARTITION BY).
fn same_key(last: &[ArrayRef], keys: &[ArrayRef]) -> Result<bool> {
    for (l, k) in last.iter().zip(keys) {
        let compare = make_comparator(l.as_ref(), k.as_ref(), SortOptions::default())?;
        if compare(0, 0) != std::cmp::Ordering::Equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first row of each run's partition, as an index into the carried rows (`c` of
/// them) followed by the batch's.
fn partition_starts(
    runs: &[std::ops::Range<usize>],
    c: usize,
    continues: bool,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
    runs.iter().enumerate().map(move |(r, run)| {
        // Before this batch if the first run continues a partition.
        let start = if r == 0 && continues {
            0
        } else {
            c + run.start
        };
        (start, (c + run.start)..(c + run.end))
    })
}

/// `LAG(arg, offset)` for a batch: each row's value `offset` rows back in its partition,
/// NULL where that is before the partition's start.
fn shift(
    offset: usize,
    carried: &mut Carried,
    arg: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    continues: bool,
) -> Result<ArrayRef> {
    let before = carried.rows.take().filter(|_| continues);
    let all = match &before {
        Some(b) => concat(&[b.as_ref(), arg.as_ref()])?,
        None => Arc::clone(arg),
    };
    let c = before.map_or(0, |b| b.len());
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(arg.len());
    let mut last_start = 0;
    for (start, rows) in partition_starts(runs, c, continues) {
        last_start = start;
        indices.extend(rows.map(|i| {
            (i >= start + offset)
                .then(|| u32::try_from(i - offset).ok())
                .flatten()
        }));
    }
    let out = take(all.as_ref(), &UInt32Array::from(indices), None)?;
    let keep_from = last_start.max(all.len().saturating_sub(offset));
    carried.rows = Some(all.slice(keep_from, all.len() - keep_from));
    Ok(out)
}

/// A moving aggregate's output for a batch, and the rows to carry to the next.
fn aggregate(
    function: Aggregate,
    m: &Moving,
    carried: &mut Carried,
    arg: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    continues: bool,
) -> ArrayRef {
    if !continues {
        carried.values.clear();
        carried.valid.clear();
    }
    // The carried rows, then this batch's: row j of the batch is at `c + j`.
    let c = carried.values.len();
    let mut values = std::mem::take(&mut carried.values);
    let mut valid = std::mem::take(&mut carried.valid);
    match arg.as_primitive_opt::<Float64Type>() {
        Some(a) => values.extend(a.values().iter().copied()),
        None => values.extend(std::iter::repeat_n(0.0, arg.len())),
    }
    // Logical nulls: a NullArray or a dictionary's null values count as null too.
    match arg.logical_nulls() {
        Some(nulls) => valid.extend(nulls.iter()),
        None => valid.extend(std::iter::repeat_n(true, arg.len())),
    }
    let mut sums: Vec<Option<f64>> = Vec::with_capacity(arg.len());
    let mut counts: Vec<i64> = Vec::with_capacity(arg.len());
    let mut last_start = 0;
    for (start, rows) in partition_starts(runs, c, continues) {
        last_start = start;
        for i in rows {
            let lo = i.saturating_sub(m.preceding).max(start);
            let end = (i + 1).saturating_sub(m.until);
            let (mut sum, mut count) = (0.0, 0i64);
            for k in lo..end.max(lo) {
                if valid[k] {
                    sum += values[k];
                    count += 1;
                }
            }
            sums.push((count > 0).then_some(sum));
            counts.push(count);
        }
    }
    // Keep what the next batch's first rows can reach: the last `preceding` rows of the
    // last partition.
    let keep_from = last_start.max(values.len().saturating_sub(m.preceding));
    carried.values = values.split_off(keep_from);
    carried.valid = valid.split_off(keep_from);
    match function {
        Aggregate::Count => Arc::new(Int64Array::from(counts)),
        Aggregate::Sum => Arc::new(Float64Array::from(sums)),
        Aggregate::Avg => Arc::new(
            sums.iter()
                .zip(&counts)
                .map(|(s, &n)| s.map(|s| s / n as f64))
                .collect::<Float64Array>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn context(batch_size: usize, partitions: usize, moving: bool) -> SessionContext {
        let config = SessionConfig::new()
            .with_batch_size(batch_size)
            .with_target_partitions(partitions);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if moving {
            builder = builder.with_physical_optimizer_rules(MovingWindows::with_default_rules());
        }
        SessionContext::new_with_state(builder.build())
    }

    /// Symbols with 0..40 rows each (some null prices, some null symbols), in pieces
    /// of 3 rows per batch so partitions span batches.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("s", DataType::Utf8, true),
            datafusion::arrow::datatypes::Field::new("d", DataType::Int64, false),
            datafusion::arrow::datatypes::Field::new("x", DataType::Float64, true),
            datafusion::arrow::datatypes::Field::new("v", DataType::Int64, true),
        ]));
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut s, mut d, mut x, mut v) = (vec![], vec![], vec![], vec![]);
        for sym in 0..30 {
            for day in 0..rng.usize(0..40) {
                s.push((sym != 7).then(|| format!("S{sym}")));
                d.push(day as i64 * 10 + sym as i64);
                x.push((rng.u8(..) > 30).then(|| rng.f64() * 100.0));
                v.push((rng.u8(..) > 50).then(|| rng.i64(0..1000)));
            }
        }
        // Shuffled: the plan must sort.
        let mut order: Vec<usize> = (0..s.len()).collect();
        rng.shuffle(&mut order);
        let batches = order
            .chunks(3)
            .map(|ix| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(ix.iter().map(|&i| s[i].clone()).collect::<StringArray>()),
                        Arc::new(ix.iter().map(|&i| d[i]).collect::<Int64Array>()),
                        Arc::new(ix.iter().map(|&i| x[i]).collect::<Float64Array>()),
                        Arc::new(ix.iter().map(|&i| v[i]).collect::<Int64Array>()),
                    ],
                )
                .unwrap()
            })
            .collect();
        MemTable::try_new(schema, vec![batches]).unwrap()
    }

    const QUERY: &str = "SELECT s, d, x,
        LAG(x) OVER (PARTITION BY s ORDER BY d) AS prev,
        LAG(x, 3) OVER (PARTITION BY s ORDER BY d) AS prev3,
        LAG(s, 2, NULL) OVER (PARTITION BY s ORDER BY d) AS prev_s,
        LAG(v, 0) OVER (PARTITION BY s ORDER BY d) AS same_v,
        LAG(x, 1, -1.0) OVER (PARTITION BY s ORDER BY d) AS prev_or_default,
        LEAD(x) OVER (PARTITION BY s ORDER BY d) AS next,
        LAG(x) IGNORE NULLS OVER (PARTITION BY s ORDER BY d) AS prev_known,
        LAG(d) OVER (ORDER BY d, s) AS prev_whole,
        AVG(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS a5,
        COUNT(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS n5,
        AVG(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS a20,
        SUM(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 2 PRECEDING AND 2 PRECEDING) AS s2,
        AVG(CAST(v AS DOUBLE)) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 7 PRECEDING AND 1 PRECEDING) AS v7,
        COUNT(*) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS c3,
        AVG(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN CURRENT ROW AND CURRENT ROW) AS a1,
        AVG(x) OVER (ORDER BY d, s ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS whole,
        SUM(x) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING) AS ahead,
        AVG(x) FILTER (WHERE v > 100) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS filtered,
        COUNT(DISTINCT v) OVER (PARTITION BY s ORDER BY d ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS distinct_v
      FROM t ORDER BY s, d";

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<serde_json::Value> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        super::super::rows_json(&batches).unwrap()
    }

    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) if !a.is_i64() || !b.is_i64() => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => a == b,
        }
    }

    #[tokio::test]
    async fn same_results_as_datafusion() {
        for (batch_size, partitions) in [(2, 1), (5, 3), (8192, 2)] {
            let ours = context(batch_size, partitions, true);
            let theirs = context(batch_size, partitions, false);
            for ctx in [&ours, &theirs] {
                ctx.register_table("t", Arc::new(table())).unwrap();
            }
            let plan = rows(&ours, &format!("EXPLAIN {QUERY}")).await;
            let plan = serde_json::to_string(&plan).unwrap();
            // Each line of the plan is one operator: which one computes what.
            let line = |op: &str, expr: &str| {
                plan.split("\\n")
                    .any(|l| l.contains(op) && l.contains(expr))
            };
            for ours in [
                "lag(t.x)",
                "lag(t.x,Int64(3))",
                "lag(t.s,Int64(2),NULL)",
                "lag(t.d)",
            ] {
                assert!(line("MovingWindowExec", ours), "{ours} in {plan}");
            }
            for theirs in ["lag(t.x,Int64(1),Float64(-1))", "lead(t.x)", "IGNORE NULLS"] {
                assert!(line("BoundedWindowAggExec", theirs), "{theirs} in {plan}");
                assert!(!line("MovingWindowExec", theirs), "{theirs} in {plan}");
            }
            let (a, b) = (rows(&ours, QUERY).await, rows(&theirs, QUERY).await);
            assert_eq!(a.len(), b.len());
            assert!(a.len() > 300, "{}", a.len());
            for (x, y) in a.iter().zip(&b) {
                let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
                assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
                for (k, v) in x {
                    assert!(
                        close(v, &y[k]),
                        "{k}: {v} vs {} in {x:?} (batch {batch_size})",
                        y[k]
                    );
                }
            }
        }
    }
}
