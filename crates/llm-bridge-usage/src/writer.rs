//! Records leave the request path through a bounded queue; one writer thread batches them
//! into the store, one transaction per flush interval (or per 1,000 records). A crash of the
//! process loses at most the records of the last flush interval. A failing or locked store is logged and retried: records wait in memory
//! (up to the queue's capacity) and are written when it recovers. Shutdown writes everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::record::UsageRecord;
use crate::store::{StoreError, UsageStore};

/// Most records written in one transaction.
const BATCH: usize = 1000;
/// How long the writer waits with nothing to write before it gives back what a burst left.
const QUIET: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Message {
    Record(Box<UsageRecord>),
    Shutdown,
}

#[derive(Default)]
struct Counters {
    /// Records handed in and not yet written.
    waiting: AtomicUsize,
    written: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    /// The store opened and its last write succeeded.
    healthy: AtomicBool,
}

/// The request path's handle: hands records to the writer without ever blocking.
#[derive(Clone)]
pub struct UsageSink {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
}

impl UsageSink {
    /// Queues a record. When the queue is full (the store has been failing for long), the
    /// record is dropped and counted: the request itself never waits or fails.
    pub fn record(&self, record: UsageRecord) {
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Record(r)))
            | Err(TrySendError::Disconnected(Message::Record(r))) => {
                self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    request_id = %r.request_id,
                    dropped_total = n,
                    "usage queue full or closed: usage record dropped"
                );
            }
            Err(_) => {
                self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Records queued or waiting for the store.
    pub fn queue_depth(&self) -> usize {
        self.counters.waiting.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Failed write attempts so far.
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::Relaxed)
    }

    /// Whether the store is open and its last write succeeded.
    pub fn healthy(&self) -> bool {
        self.counters.healthy.load(Ordering::Relaxed)
    }
}

/// Opens the store, again after a failure.
pub type StoreOpener = Box<dyn FnMut() -> Result<Box<dyn UsageStore>, StoreError> + Send>;

/// The writer thread.
pub struct UsageWriter {
    tx: SyncSender<Message>,
    done: Receiver<()>,
    join: Option<JoinHandle<()>>,
}

impl UsageWriter {
    /// Starts the writer; at most `capacity` records wait in memory. The store is opened
    /// here, before returning, so that readiness is known at once; if that fails the writer
    /// keeps trying in the background.
    pub fn start(
        mut open: StoreOpener,
        capacity: usize,
        flush_interval: Duration,
    ) -> std::io::Result<(UsageWriter, UsageSink)> {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel(capacity);
        let (done_tx, done) = sync_channel(1);
        let counters = Arc::new(Counters::default());
        let store = match open() {
            Ok(s) => {
                counters.healthy.store(true, Ordering::Relaxed);
                Some(s)
            }
            Err(e) => {
                tracing::error!(error = %e, "usage store cannot be opened: records will wait in memory, retrying");
                None
            }
        };
        let c = counters.clone();
        let join = std::thread::Builder::new()
            .name("usage-writer".into())
            .spawn(move || {
                run(store, open, rx, &c, capacity, flush_interval);
                let _ = done_tx.send(());
            })?;
        Ok((
            UsageWriter {
                tx: tx.clone(),
                done,
                join: Some(join),
            },
            UsageSink { tx, counters },
        ))
    }

    /// Writes every queued record and stops; waits at most `timeout`. Returns whether
    /// everything was written.
    pub fn shutdown(mut self, timeout: Duration) -> bool {
        let _ = self.tx.send(Message::Shutdown);
        match self.done.recv_timeout(timeout) {
            Ok(()) => {
                if let Some(j) = self.join.take() {
                    let _ = j.join();
                }
                true
            }
            Err(_) => false,
        }
    }
}

fn run(
    mut store: Option<Box<dyn UsageStore>>,
    mut open: StoreOpener,
    rx: Receiver<Message>,
    counters: &Counters,
    capacity: usize,
    flush_interval: Duration,
) {
    let mut pending: Vec<UsageRecord> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut retry_at: Option<Instant> = None;
    let mut shutting_down = false;
    let mut give_up_at: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    // When the oldest waiting record must be written: records are batched for up to one
    // flush interval, so that a busy gateway commits a few times a second, not per request.
    let mut flush_at: Option<Instant> = None;
    // Whether the store has written since it last gave back its memory: a quiet second
    // after a write makes it give it back.
    let mut store_warm = false;
    loop {
        // Take what is queued, waiting no longer than the next write or retry is due.
        let next = match (retry_at, flush_at) {
            (Some(r), Some(f)) => Some(r.max(f)),
            (r, f) => r.or(f),
        };
        let wait = match next {
            _ if shutting_down => Duration::from_millis(20),
            Some(at) => at.saturating_duration_since(Instant::now()),
            // Room a burst left, and the store's cache, go back after a quiet second (below).
            None if pending.capacity() > BATCH || store_warm => QUIET,
            None => Duration::from_secs(3600),
        };
        if !pending.is_empty() && !shutting_down && retry_at.is_none() {
            // A batch is gathering: sleep until it is due instead of waking per record, then
            // take everything that arrived meanwhile.
            std::thread::sleep(wait);
            while pending.len() < capacity {
                match rx.try_recv() {
                    Ok(Message::Record(r)) => pending.push(*r),
                    Ok(Message::Shutdown) => shutting_down = true,
                    Err(_) => break,
                }
            }
        } else if pending.len() < capacity {
            match rx.recv_timeout(wait) {
                Ok(Message::Record(r)) => pending.push(*r),
                Ok(Message::Shutdown) => shutting_down = true,
                Err(RecvTimeoutError::Timeout) if pending.is_empty() => {
                    give_back_after_burst(&mut pending, 0);
                    if store_warm {
                        if let Some(s) = store.as_mut() {
                            s.release_memory();
                        }
                        llm_bridge_core::memory::quiet();
                    }
                    store_warm = false;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => shutting_down = true,
            }
            while pending.len() < capacity {
                match rx.try_recv() {
                    Ok(Message::Record(r)) => pending.push(*r),
                    Ok(Message::Shutdown) => shutting_down = true,
                    Err(_) => break,
                }
            }
        } else if let Some(at) = retry_at {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        if !pending.is_empty() && flush_at.is_none() {
            flush_at = Some(Instant::now() + flush_interval);
        }
        if shutting_down && give_up_at.is_none() {
            give_up_at = Some(Instant::now() + Duration::from_secs(10));
        }
        let batch_ready = shutting_down
            || pending.len() >= BATCH
            || flush_at.is_some_and(|at| Instant::now() >= at);
        let due = batch_ready && retry_at.is_none_or(|at| Instant::now() >= at);
        if !pending.is_empty() && due {
            let before = pending.len();
            let result = write(&mut store, &mut open, &mut pending);
            let written = before - pending.len();
            counters
                .written
                .fetch_add(written as u64, Ordering::Relaxed);
            counters.waiting.fetch_sub(written, Ordering::Relaxed);
            counters.healthy.store(result.is_ok(), Ordering::Relaxed);
            store_warm = true;
            if pending.is_empty() {
                flush_at = None;
                give_back_after_burst(&mut pending, written);
            }
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if retry_at.take().is_some() {
                        tracing::info!("usage store recovered: queued records written");
                    }
                }
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    // Say it once per backoff cycle, not once per attempt.
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::error!(error = %e, waiting = pending.len(), "usage store failed: records kept in memory, retrying");
                        last_error_log = Some(Instant::now());
                    }
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if shutting_down && pending.is_empty() {
            match rx.try_recv() {
                Ok(Message::Record(r)) => pending.push(*r),
                Ok(Message::Shutdown) => {}
                Err(_) => return,
            }
        }
        if give_up_at.is_some_and(|t| Instant::now() >= t) && !pending.is_empty() {
            tracing::error!(
                lost = pending.len(),
                "usage store still failing at shutdown: records lost"
            );
            return;
        }
    }
}

/// A burst grows the (emptied) queue to what one flush interval gathered at its peak; that
/// capacity goes back once an interval gathers less than a quarter of it, or a quiet second
/// passes with nothing (`written` 0).
fn give_back_after_burst(pending: &mut Vec<UsageRecord>, written: usize) {
    if pending.capacity() > BATCH && written < pending.capacity() / 4 {
        *pending = Vec::new();
    }
}

/// Writes `pending` in batches, removing each batch once committed.
fn write(
    store: &mut Option<Box<dyn UsageStore>>,
    open: &mut StoreOpener,
    pending: &mut Vec<UsageRecord>,
) -> Result<(), StoreError> {
    if store.is_none() {
        *store = Some(open()?);
    }
    let Some(s) = store.as_mut() else {
        return Err(StoreError("no store".into()));
    };
    while !pending.is_empty() {
        let n = pending.len().min(BATCH);
        if let Err(e) = s.insert(&pending[..n]) {
            // Reopen next time: the connection may be what is broken.
            *store = None;
            return Err(e);
        }
        pending.drain(..n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_a_burst_grew_goes_back_once_quiet_and_not_under_steady_load() {
        let mut pending: Vec<UsageRecord> = Vec::with_capacity(40 * BATCH);
        give_back_after_burst(&mut pending, 30 * BATCH);
        assert_eq!(
            pending.capacity(),
            40 * BATCH,
            "a steady rate keeps its room"
        );
        give_back_after_burst(&mut pending, 3);
        assert_eq!(
            pending.capacity(),
            0,
            "a quiet interval gives the burst's room back"
        );
        let mut small: Vec<UsageRecord> = Vec::with_capacity(BATCH);
        give_back_after_burst(&mut small, 1);
        assert_eq!(small.capacity(), BATCH, "room for one batch is always kept");
    }
}
