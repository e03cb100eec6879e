//! A workflow: the model ([`crate::model`], with [`crate::backend`] and
//! [`crate::channel`]) and its loading from a file ([`crate::load`]), under the one path
//! the other crates use (`orchestrator_engine::workflow::{Workflow, load_file, ...}`).
//!
//! Nothing here but re-exports; the engine's own modules import `model` and `load`
//! directly, so that this module imports both without closing a cycle.

pub use crate::backend::{AwsBlock, Backend};
pub use crate::channel::{Channel, SHARED_CHANNELS};
pub use crate::load::{
    load_file, load_str, LoadError, LoadOptions, COMMON_TASK_FIELDS, MAX_ID_LEN,
};
pub use crate::model::{RetryPolicy, TaskDef, Workflow};
