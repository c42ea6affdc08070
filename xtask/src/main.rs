//! `cargo xtask <task>`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! - `ci`: everything CI runs (`.ci/run`): format, lints, tidy, tests, client tests.
//! - `tidy`: checks the dependency direction between the workspace crates (docs/architecture.md) and
//!   that libraries never read the environment.
//! - `bench`: llm-bridge against the direct path and nginx, one table (see docs/benchmarks.md).
//! - `dist [--check]`: the release archive, and a check that it works once unpacked.
//! - `prices PATH [--check]`: the built-in price catalog, generated from a models.dev snapshot.

#![allow(clippy::print_stdout)]

mod bench;
mod dist;
mod prices;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("ci") => run(Command::new("bash")
            .arg(root.join(".ci/run"))
            .current_dir(&root)),
        Some("tidy") => tidy::run(&root),
        Some("bench") => bench::main(&args[1..]),
        Some("dist") => dist::main(&args[1..]),
        Some("prices") => prices::main(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|tidy|bench|dist|prices> (bench: [--quick] [--rounds N] [--seconds S] [--json PATH] [--no-build] [--micro] [--telemetry]; dist: [--check]; prices: PATH [--check])"
            );
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command, failing if it fails.
pub fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("could not run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}
