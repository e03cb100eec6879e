//! `notify test` and `notify deliver`.

use std::path::PathBuf;

use orchestrator_service::{ops, Context, Error};

/// Send a test message to a channel, or deliver notifications still waiting.
#[derive(clap::Subcommand)]
pub enum Notify {
    /// Send a test message to channel CHANNEL of workflow FILE, now. Exit 0 if it was
    /// delivered, 1 if not (with the channel's answer).
    Test {
        /// The workflow file that defines the channel under `channels:`.
        file: PathBuf,
        /// The channel's name.
        channel: String,
    },
    /// Deliver every notification that is due (after a crash, or once a channel is back);
    /// the daemon does this by itself every second.
    Deliver,
}

impl Notify {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        match self {
            Notify::Test { file, channel } => ops::notify::test(ctx, &file, &channel).await,
            Notify::Deliver => ops::notify::deliver(ctx).await,
        }
    }
}
