//! One background thread for token estimates: the request path hands it the finished
//! request, so that counting (and loading a vocabulary) never runs on the async threads, and
//! never on hundreds of threads at once when many streams are cancelled together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use crate::count::release_idle;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs that may wait; each holds a finished request's bodies, so the queue is bounded.
const QUEUE: usize = 4096;

/// Vocabularies unused this long are released (they hold ~45 MB for o200k).
const IDLE: Duration = Duration::from_secs(10);

/// The estimator's queue. Cheap to clone.
#[derive(Clone)]
pub struct Estimator {
    tx: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
}

impl Estimator {
    /// Starts the estimator thread.
    pub fn start() -> std::io::Result<Estimator> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("usage-estimator".into())
            .spawn(move || run(&rx, &p))?;
        Ok(Estimator { tx, pending })
    }

    /// Runs `job` on the estimator thread; here, when that thread is gone or already has
    /// 4,096 jobs waiting — under that load the request that ends pays for its own count,
    /// which slows the load down instead of growing memory without bound.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.tx.try_send(Box::new(job))
        {
            job();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_runs_the_job_where_it_was_submitted() {
        let estimator = Estimator::start().unwrap();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        estimator.submit(move || {
            let _ = blocked.recv();
        });
        let here = std::thread::current().id();
        let ran_here = Arc::new(AtomicUsize::new(0));
        for _ in 0..QUEUE + 10 {
            let ran_here = Arc::clone(&ran_here);
            estimator.submit(move || {
                if std::thread::current().id() == here {
                    ran_here.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // The blocking job holds the thread (or, not yet taken, one queue slot).
        let inline = ran_here.load(Ordering::SeqCst);
        assert!((10..=11).contains(&inline), "{inline} jobs ran in place");
        release.send(()).unwrap();
        while estimator.pending() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
