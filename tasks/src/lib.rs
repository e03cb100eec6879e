//! Task kinds. Each kind is a typed config (the YAML fields of that kind) whose
//! `build` makes the runnable task; [`registry`] lists them all.

pub mod data;
mod noop;
mod shell;

pub use data::crawl::CrawlConfig;
pub use noop::NoopConfig;
pub use shell::ShellConfig;

use orchestrator_engine::task::Registry;

/// Every built-in task kind.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register::<NoopConfig>()
        .register::<ShellConfig>()
        .register::<CrawlConfig>();
    r
}
