//! The log file, written off the request path: log lines are appended to a shared buffer
//! (a copy under a short lock), and a background thread writes the buffer to the
//! size-rotated file every 100 ms. No wake-up per line, no system call per line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::rotate::RotatingFile;

/// Lines waiting beyond this many bytes (the disk is stuck) are dropped and counted, so that
/// requests never wait for the disk.
const MAX_PENDING: usize = 16 * 1024 * 1024;
const INTERVAL: Duration = Duration::from_millis(100);
/// What each of the two line buffers starts with, and shrinks back to after a burst.
const BUFFER: usize = 64 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    wake: Condvar,
    json: bool,
}

/// The writer given to tracing; cheap to clone.
#[derive(Clone)]
pub struct LogFile {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the background thread when dropped.
pub struct LogFileGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogFile {
    /// Starts the background writer for `file`.
    pub fn start(file: RotatingFile, json: bool) -> std::io::Result<(LogFile, LogFileGuard)> {
        Self::start_with(file, json, llm_bridge_core::memory::quiet)
    }

    /// [`LogFile::start`], with what the thread runs once lines stop coming given (see
    /// [`llm_bridge_core::memory::quiet`]).
    fn start_with(
        file: RotatingFile,
        json: bool,
        quiet: fn(),
    ) -> std::io::Result<(LogFile, LogFileGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(BUFFER)),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            json,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(&s, file, quiet))?;
        Ok((
            LogFile {
                shared: shared.clone(),
            },
            LogFileGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

fn write_loop(shared: &Shared, mut file: RotatingFile, quiet: fn()) {
    let mut batch = Vec::with_capacity(BUFFER);
    // Whether lines came since the thread last gave its free memory back: it does at the
    // first interval without any.
    let mut busy = false;
    loop {
        let stopping = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !shared.stop.load(Ordering::SeqCst) {
                pending = shared
                    .wake
                    .wait_timeout(pending, INTERVAL)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            std::mem::swap(&mut *pending, &mut batch);
            shared.stop.load(Ordering::SeqCst)
        };
        if batch.is_empty() && !stopping && shared.dropped.load(Ordering::SeqCst) == 0 {
            batch = emptied(std::mem::take(&mut batch));
            if busy {
                quiet();
                busy = false;
            }
            continue;
        }
        busy = true;
        // Line by line, so that rotation never splits a line. The ends are found with
        // memchr: a byte-by-byte split cost 2.7 % of the process's instructions (callgrind).
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &batch) {
            let _ = file.write_all(&batch[start..=end]);
            start = end + 1;
        }
        if start < batch.len() {
            let _ = file.write_all(&batch[start..]);
        }
        batch = emptied(std::mem::take(&mut batch));
        let dropped = shared.dropped.swap(0, Ordering::SeqCst);
        if dropped > 0 {
            let line = if shared.json {
                format!(
                    "{{\"level\":\"ERROR\",\"message\":\"log writing fell behind: {dropped} lines dropped\",\"target\":\"llm_bridge::logging\"}}\n"
                )
            } else {
                format!(
                    "ERROR llm_bridge::logging: log writing fell behind: {dropped} lines dropped\n"
                )
            };
            let _ = file.write_all(line.as_bytes());
        }
        let _ = file.flush();
        if stopping {
            return;
        }
    }
}

/// `buf`, written, ready for the next lines. A burst grows both buffers to its busiest
/// interval's lines; one holding less than a quarter of its capacity is replaced by a new
/// one of the starting size (each buffer in turn, as they swap), so that a burst's memory
/// is not kept for good.
fn emptied(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > 4 * buf.len().max(BUFFER) {
        return Vec::with_capacity(BUFFER);
    }
    buf.clear();
    buf
}

impl Drop for LogFileGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's writer: tracing writes a formatted line, which is appended to the buffer.
pub struct LineSink<'a> {
    shared: &'a Shared,
}

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.len() + buf.len() > MAX_PENDING {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_a_burst_grew_is_given_back_once_it_is_quiet() {
        let mut burst = Vec::with_capacity(BUFFER);
        burst.resize(4 * 1024 * 1024, b'x');
        let kept = emptied(burst);
        assert!(kept.is_empty() && kept.capacity() >= 4 * 1024 * 1024);
        let mut quiet = kept;
        quiet.extend_from_slice(b"one line\n");
        let given_back = emptied(quiet);
        assert!(given_back.is_empty());
        assert_eq!(given_back.capacity(), BUFFER);
    }

    static QUIETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn quiet() {
        QUIETS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn the_writer_gives_back_its_memory_once_lines_stop_coming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (log, guard) =
            LogFile::start_with(RotatingFile::open(&path, 1 << 20, 1).unwrap(), true, quiet)
                .unwrap();
        let quiets = || QUIETS.load(Ordering::SeqCst);
        std::thread::sleep(3 * INTERVAL);
        assert_eq!(quiets(), 0, "gave back before any line came");
        // Lines through three intervals: the thread is busy.
        for i in 0..15 {
            log.make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
            std::thread::sleep(INTERVAL / 5);
        }
        assert_eq!(quiets(), 0, "gave back while lines were coming");
        std::thread::sleep(3 * INTERVAL);
        assert_eq!(quiets(), 1, "gave back once lines stopped");
        std::thread::sleep(5 * INTERVAL);
        assert_eq!(quiets(), 1, "gave back again while idle");
        drop(guard);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 15);
    }

    #[test]
    fn lines_reach_the_file_whole_and_the_guard_writes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (log, guard) =
            LogFile::start(RotatingFile::open(&path, 1000, 1).unwrap(), true).unwrap();
        for i in 0..100 {
            log.make_writer()
                .write_all(format!("line {i:04} .........................\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let newest = std::fs::read_to_string(&path).unwrap();
        let older = std::fs::read_to_string(dir.path().join("x.log.1")).unwrap();
        assert!(newest.ends_with("line 0099 .........................\n"));
        for text in [&newest, &older] {
            assert!(text.len() <= 1000);
            assert!(
                text.lines()
                    .all(|l| l.starts_with("line ") && l.len() == 35),
                "{text}"
            );
        }
    }
}
