//! tracing set up from the `logging` section. Only the binary does this.
//!
//! Console lines go to standard error; file lines go through a buffer that a background
//! thread writes to a size-rotated file (see `logfile`), so that the request path never waits
//! for the disk.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LoggingConfig, level_directive};
use crate::jsonlog::{JsonFields, JsonLines};
use crate::logfile::{LogFile, LogFileGuard};
use crate::rotate::RotatingFile;
use crate::textlog::TextLines;

/// Keeps the file writer alive; dropping it writes the last lines.
pub struct LogGuard(#[allow(dead_code)] Option<LogFileGuard>);

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `logging.level`.
pub fn init(config: &LoggingConfig) -> Result<LogGuard, String> {
    let level = level_directive(&config.level)?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::new(level),
    };
    let json = config.format == LogFormat::Json;
    let console = config.output.console.then(|| {
        let ansi = std::io::stderr().is_terminal();
        let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
        if json {
            layer.event_format(JsonLines).fmt_fields(JsonFields).boxed()
        } else {
            layer.event_format(TextLines::new(ansi)).boxed()
        }
    });
    let mut guard = None;
    let file = match &config.output.file {
        Some(f) => {
            let writer = RotatingFile::open(&f.path, f.max_size, f.backup_count)
                .map_err(|e| format!("logging.output.file: {}: {e}", f.path.display()))?;
            let (writer, g) = LogFile::start(writer, json)
                .map_err(|e| format!("logging.output.file: cannot start the log writer: {e}"))?;
            guard = Some(g);
            let layer = fmt::layer().with_writer(writer).with_ansi(false);
            Some(if json {
                layer.event_format(JsonLines).fmt_fields(JsonFields).boxed()
            } else {
                layer.event_format(TextLines::new(false)).boxed()
            })
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(LogGuard(guard))
}
