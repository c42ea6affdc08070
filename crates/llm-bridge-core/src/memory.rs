//! Giving memory back after a burst of work. The allocator is the executable's choice
//! (mimalloc in `llm-bridge`), and with it what a thread must do to return the memory its
//! allocator holds free: mimalloc's pages belong to the thread that took them, and only that
//! thread hands back the empty ones. The threads that work in bursts (the serving lanes, the
//! usage and answers writers, the log writer) call [`quiet`] once a burst is over.

use std::sync::OnceLock;

static QUIET: OnceLock<fn()> = OnceLock::new();

/// Sets what [`quiet`] runs; the first call wins.
pub fn on_quiet(give_back: fn()) {
    let _ = QUIET.set(give_back);
}

/// This thread worked and has nothing to do for now: give back what its allocator holds
/// free. Costs a walk of the thread's pages, so it is for the end of a burst, not for
/// between requests.
pub fn quiet() {
    if let Some(give_back) = QUIET.get() {
        give_back();
    }
}
