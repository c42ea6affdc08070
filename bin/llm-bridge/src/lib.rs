//! The llm-bridge binary as a library: configuration, composition and serving, so that
//! end-to-end tests and other programs can start the real gateway in-process.
//!
//! `main` only parses the command line, loads `.env`, reads the environment and calls in here.

pub mod app;
pub mod cli;
pub mod config;
pub mod jsonlog;
pub mod keys_cli;
pub mod logfile;
pub mod logging;
pub mod migrate_cli;
pub mod otlp;
pub mod prices_cli;
pub mod registry;
pub mod rotate;
pub mod stores;
pub mod textlog;

pub use app::{App, Environment, RunningApp};
pub use config::{AppConfig, ConfigError, ConfigSource};
pub use registry::Registry;

/// The version and the git commit this binary was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("LLM_BRIDGE_GIT_COMMIT"),
    ")"
);
