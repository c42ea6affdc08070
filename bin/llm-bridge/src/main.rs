//! `llm-bridge`: parse the command line and run it. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: cheaper small allocations than glibc's, and memory returned after load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `.env` first, before any thread starts; real environment variables win over it.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("error: .env: {e}");
            return ExitCode::FAILURE;
        }
    }
    llm_bridge::cli::run(llm_bridge::cli::Cli::parse())
}
