//! tracing set up from the `logging` section. Only the binary does this.
//!
//! Console lines go to standard error; file lines go through a background thread
//! (tracing-appender's non-blocking writer) into a size-rotated file, so that the request path
//! never waits for the disk.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LoggingConfig, level_directive};
use crate::rotate::RotatingFile;

/// Keeps the file writer alive; dropping it flushes the last lines.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

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
        let layer = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        if json {
            layer
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .boxed()
        } else {
            layer.boxed()
        }
    });
    let mut guard = None;
    let file = match &config.output.file {
        Some(f) => {
            let writer = RotatingFile::open(&f.path, f.max_size, f.backup_count)
                .map_err(|e| format!("logging.output.file: {}: {e}", f.path.display()))?;
            // Not lossy: under extreme load the request path waits rather than losing
            // access events (the queue holds 128k lines first).
            let (writer, g) = NonBlockingBuilder::default()
                .lossy(false)
                .thread_name("log-writer")
                .finish(writer);
            guard = Some(g);
            let layer = fmt::layer().with_writer(writer).with_ansi(false);
            Some(if json {
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .boxed()
            } else {
                layer.boxed()
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
