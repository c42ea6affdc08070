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
    tune_allocator();
    return_memory_after_load();
    llm_bridge::cli::on_worker_idle(collect_this_thread);
    llm_bridge_core::memory::on_quiet(collect_all);
    llm_bridge_usage::count::on_vocabulary_memory(vocabulary_memory);
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
/// its blocks) to the system: run by each async worker thread after a spell of work, since an
/// idle thread's heap is collected by no one else.
#[allow(unsafe_code)]
fn collect_this_thread() {
    // SAFETY: mi_collect takes no pointers; it collects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Hands back what a token vocabulary leaves behind. Building one reads its text (3.6 MB for
/// o200k), embedded in the executable's read-only data, once: those pages would stay in the
/// process's RSS for good (measured: the read-only data segment 2.0 -> 5.7 MB). Dropping
/// the segment's pages is safe, since each is an unmodified copy of the file, read back from
/// the page cache if touched again. Released vocabularies' memory is freed by the estimator
/// thread, which then sleeps and would not collect it.
fn vocabulary_memory(what: llm_bridge_usage::count::VocabularyMemory) {
    match what {
        llm_bridge_usage::count::VocabularyMemory::Loaded => drop_read_only_data_pages(),
        llm_bridge_usage::count::VocabularyMemory::Released => collect_all(),
    }
}

/// Collects this thread's heap and returns whatever it can to the system now, and the same
/// of the C library's `malloc`, which SQLite allocates with: its page caches, released by
/// the writers when they go quiet, were freed into glibc's arenas and stayed resident there
/// (measured: 1.7 MB 30 s after a load).
#[allow(unsafe_code)]
fn collect_all() {
    // SAFETY: mi_collect takes no pointers; it collects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; glibc locks each arena while it trims it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops from this process the resident pages of the executable's private read-only mappings
/// that hold no page of its own (`Anonymous: 0` in smaps: nothing there was ever written, so
/// every page equals the file). Linux only; elsewhere, and on any surprise, nothing happens.
#[allow(unsafe_code)]
fn drop_read_only_data_pages() {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return;
        };
        let Some(exe) = exe.to_str() else { return };
        let exe = format!(" {exe}");
        let mut candidate: Option<(usize, usize)> = None;
        for line in smaps.lines() {
            let mut fields = line.split_ascii_whitespace();
            let first = fields.next().unwrap_or_default();
            if let Some((start, end)) = first.split_once('-').and_then(|(a, b)| {
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            }) {
                let read_only = fields.next() == Some("r--p");
                candidate = (read_only && line.ends_with(&exe)).then_some((start, end));
            } else if first == "Anonymous:" {
                if let Some((start, end)) = candidate.take() {
                    if fields.next() == Some("0") {
                        // SAFETY: a whole mapping of this process, page-aligned by the kernel;
                        // it is private, read-only and has no modified page, so MADV_DONTNEED
                        // only makes its pages read from the file again when next touched.
                        unsafe {
                            libc::madvise(
                                start as *mut libc::c_void,
                                end - start,
                                libc::MADV_DONTNEED,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// mimalloc v3's `mi_option_purge_delay` and `mi_option_page_full_retain` (their places in
/// `mi_option_t`, mimalloc.h of libmimalloc-sys 0.1.49; the crate's constants are v2's).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_PAGE_FULL_RETAIN: libmimalloc_sys::mi_option_t = 36;

/// Memory freed goes back to the system after 100 ms (mimalloc waits 10 ms, and ten times
/// that for whole arenas) and no thread keeps full pages for later. Issue 22's first pass
/// measured 21 KB per open stream instead of 62 KB and 33 MB RSS 30 s after 2,000 held
/// streams instead of 43 MB with these at 1 ms. In its tenth pass 1 ms cost 1.5 minor page
/// faults a request at 64 connections (the pages purged between requests are touched again)
/// and about a tenth of the CPU per request against 0.09 faults at 100 ms (`/proc/<pid>/stat`,
/// three runs alternated), while per stream (41 and 42 KB, 5,000 held) and RSS 30 s after
/// them (25.3 and 25.4 MB) stayed the same. `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_PAGE_FULL_RETAIN` in the environment still win.
#[allow(unsafe_code)]
fn tune_allocator() {
    for (option, env, value) in [
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 100),
        (MI_OPTION_PAGE_FULL_RETAIN, "MIMALLOC_PAGE_FULL_RETAIN", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mi_option_set takes no pointers; it is called before any thread starts.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// Text in the executable's read-only data, as a vocabulary is (1 MiB).
    static TEXT: &[u8] = &[7; 1 << 20];

    /// Resident kB of this executable's private read-only mappings.
    fn read_only_resident_kb() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("/proc/self/exe");
        let exe = format!(" {}", exe.display());
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut counting = false;
        let mut kb = 0;
        for line in smaps.lines() {
            if line
                .split_ascii_whitespace()
                .next()
                .is_some_and(|f| f.contains('-'))
            {
                counting = line.contains(" r--p ") && line.ends_with(&exe);
            } else if counting && line.starts_with("Rss:") {
                let field = line.split_ascii_whitespace().nth(1);
                kb += field
                    .and_then(|f| f.parse::<u64>().ok())
                    .expect("Rss: N kB");
            }
        }
        kb
    }

    #[test]
    fn the_embedded_texts_pages_leave_and_read_back_the_same() {
        let sum = |t: &[u8]| t.iter().map(|&b| u64::from(b)).sum::<u64>();
        assert_eq!(sum(std::hint::black_box(TEXT)), 7 << 20);
        let before = read_only_resident_kb();
        assert!(before >= 1024, "the text was read: {before} kB resident");
        super::drop_read_only_data_pages();
        let after = read_only_resident_kb();
        // Half the text, not all of it: the kernel maps up to 64 kB around each page that a
        // later read of other read-only data faults in, and some of those may be the text's.
        assert!(
            after + 512 <= before,
            "{before} kB resident before, {after} kB after"
        );
        assert_eq!(sum(std::hint::black_box(TEXT)), 7 << 20);
    }
}
