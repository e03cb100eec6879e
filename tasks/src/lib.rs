//! Task kinds. Each kind is a typed config (the YAML fields of that kind) whose
//! `build` makes the runnable task; [`registry`] lists them all.

/// `format!` as a config's [`orchestrator_engine::task::Invalid`], for `build`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        orchestrator_engine::task::Invalid::from(format!($($arg)*))
    };
}

pub mod alert;
pub mod alpha_vantage;
pub mod aws;
pub mod data;
pub mod expire;
pub mod files;
mod noop;
pub mod plugin;
mod process;
mod shell;

pub use alert::AlertConfig;
pub use alpha_vantage::quote::QuoteConfig;
pub use alpha_vantage::AlphaVantageConfig;
pub use aws::{AthenaQueryConfig, GlueJobConfig};
pub use data::crawl::CrawlConfig;
pub use data::create_table_as::CreateTableAsConfig;
pub use data::publish::PublishConfig;
pub use data::quality::QualityCheckConfig;
pub use data::sql::SqlConfig;
pub use expire::ExpireFilesConfig;
pub use noop::NoopConfig;
pub use shell::ShellConfig;

use orchestrator_engine::task::Registry;

/// Every built-in task kind, and plugins (found as [`plugin::Finder::from_env`] says).
pub fn registry() -> Registry {
    builtin().with_plugins(std::sync::Arc::new(plugin::Finder::from_env()))
}

/// Every built-in task kind, without plugins.
pub fn builtin() -> Registry {
    let mut r = Registry::default();
    r.register::<NoopConfig>()
        .register::<ShellConfig>()
        .register::<CrawlConfig>()
        .register::<SqlConfig>()
        .register::<CreateTableAsConfig>()
        .register::<QualityCheckConfig>()
        .register::<PublishConfig>()
        .register::<AlphaVantageConfig>()
        .register::<QuoteConfig>()
        .register::<AthenaQueryConfig>()
        .register::<GlueJobConfig>()
        .register::<AlertConfig>()
        .register::<ExpireFilesConfig>();
    r
}
