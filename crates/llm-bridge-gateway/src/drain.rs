//! Shutdown coordination for connections: a signal they watch, and a count the server waits
//! on (one for HTTP connections, one for upgraded WebSockets, which hyper no longer serves).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// The shutdown signal and the connections still open.
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    /// `true` once the drain timeout passed: what still runs is cut.
    cut: watch::Sender<bool>,
    open: Arc<Counter>,
}

#[derive(Default)]
struct Counter {
    n: AtomicUsize,
    idle: Notify,
}

/// Held by an open connection; dropping it counts the connection closed.
pub(crate) struct Entered(Arc<Counter>);

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            signal: watch::channel(false).0,
            cut: watch::channel(false).0,
            open: Arc::new(Counter::default()),
        }
    }
}

impl Drain {
    /// Counts a connection open until the returned guard is dropped.
    pub(crate) fn enter(&self) -> Entered {
        self.open.n.fetch_add(1, Ordering::SeqCst);
        Entered(self.open.clone())
    }

    /// The signal: `true` once shutdown began.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Begins shutdown.
    pub(crate) fn start(&self) {
        self.signal.send_replace(true);
    }

    /// The cut signal: `true` once the drain timeout passed.
    pub(crate) fn subscribe_cut(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }

    /// Cuts what still runs (the drain timeout passed).
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Whether shutdown began.
    pub(crate) fn started(&self) -> bool {
        *self.signal.borrow()
    }

    /// Connections still open.
    pub(crate) fn open(&self) -> usize {
        self.open.n.load(Ordering::SeqCst)
    }

    /// Resolves once no connection is open.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.open.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}
