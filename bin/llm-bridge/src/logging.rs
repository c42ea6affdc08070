//! tracing set up from the `logging` section. Only the binary does this.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LoggingConfig, level_directive};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `logging.level`.
pub fn init(config: &LoggingConfig) -> Result<(), String> {
    let level = level_directive(&config.level)?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::new(level),
    };
    let console = config.output.console.then(|| {
        let layer = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        match config.format {
            LogFormat::Json => layer
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .boxed(),
            LogFormat::Text => layer.boxed(),
        }
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .try_init()
        .map_err(|e| e.to_string())
}
