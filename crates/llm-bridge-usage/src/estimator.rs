//! One background thread for token estimates: the request path hands it the finished
//! request, so that counting (and loading a vocabulary) never runs on the async threads, and
//! never on hundreds of threads at once when many streams are cancelled together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use crate::count::release_idle;

type Job = Box<dyn FnOnce() + Send>;

/// Vocabularies unused this long are released (they hold ~45 MB for o200k).
const IDLE: Duration = Duration::from_secs(10);

/// The estimator's queue. Cheap to clone.
#[derive(Clone)]
pub struct Estimator {
    tx: Sender<Job>,
    pending: Arc<AtomicUsize>,
}

impl Estimator {
    /// Starts the estimator thread.
    pub fn start() -> std::io::Result<Estimator> {
        let (tx, rx) = channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("usage-estimator".into())
            .spawn(move || run(&rx, &p))?;
        Ok(Estimator { tx, pending })
    }

    /// Runs `job` on the estimator thread (or here, if that thread is gone).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.send(Box::new(job)) {
            (e.0)();
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Jobs submitted and not finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

fn run(rx: &Receiver<Job>, pending: &AtomicUsize) {
    loop {
        match rx.recv_timeout(IDLE) {
            Ok(job) => {
                job();
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Timeout) => release_idle(IDLE),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
