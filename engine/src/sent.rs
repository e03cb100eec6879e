//! The messages task kinds have sent (e.g. an alert for one row, to one channel), by
//! key, so that a rerun or a later run does not send one again.

use orchestrator_state::{SentRecord, StateError, Store, Write};

pub trait SentMessages: Send + Sync {
    /// The run that already sent message `key`, if any.
    fn sender(&self, key: &str) -> Result<Option<String>, StateError>;
    /// Records, durably, that `run_id` sent message `key`.
    fn mark(&self, key: &str, run_id: &str) -> Result<(), StateError>;
}

impl SentMessages for Store {
    fn sender(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(Store::sent(self, key)?.map(|r| r.run_id))
    }

    fn mark(&self, key: &str, run_id: &str) -> Result<(), StateError> {
        self.commit(&[Write::Sent(SentRecord {
            key: key.to_string(),
            at: chrono::Utc::now(),
            run_id: run_id.to_string(),
        })])
    }
}
