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
    return_memory_after_load();
    llm_bridge::cli::on_worker_idle(collect_this_thread);
    llm_bridge::cli::run(llm_bridge::cli::Cli::parse())
}

/// mimalloc returns freed memory to the system only when the thread that freed it allocates
/// again; after a burst, idle worker threads never do, and RSS stays at its peak. A thread
/// that wakes every few seconds to collect does it for them (cheap: nothing to do when idle).
#[allow(unsafe_code)]
fn return_memory_after_load() {
    let _ = std::thread::Builder::new()
        .name("memory-collect".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                // SAFETY: mi_collect takes no pointers; it may be called from any thread.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        });
}

/// Returns the pages this thread's heap holds free (its own frees and other threads' frees of
/// its blocks) to the system: run by each async worker thread as it goes idle, since an idle
/// thread's heap is collected by no one else.
#[allow(unsafe_code)]
fn collect_this_thread() {
    // SAFETY: mi_collect takes no pointers; it collects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
