//! Lanes: threads that each run their own single-threaded runtime, to which accepted
//! connections are handed whole.
//!
//! A connection and everything its requests start (the upstream connection it borrows from
//! its lane's pool, the tasks hyper spawns) then run on one thread: no task is woken on
//! another thread, and no idle thread is woken to look for work. On tokio's work-stealing
//! runtime each request woke the other worker (2.0 context switches per request per worker
//! at concurrency 1); see docs/benchmarks.md for what lanes measured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Handle;

/// The lanes that serve connections (see the module docs). The threads behind the handles
/// belong to whoever made them; they must run until [`crate::serve_on`] has returned.
pub struct Lanes {
    lanes: Box<[Lane]>,
}

struct Lane {
    handle: Handle,
    /// Connections open on this lane.
    open: Arc<AtomicUsize>,
}

impl Lanes {
    /// Lanes on these runtimes (each driven by its own thread). `None` when there are none.
    pub fn new(handles: impl IntoIterator<Item = Handle>) -> Option<Lanes> {
        let lanes: Box<[Lane]> = handles
            .into_iter()
            .map(|handle| Lane {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        (!lanes.is_empty()).then_some(Lanes { lanes })
    }

    /// Runs a connection on the lane with the fewest open connections (the first of those
    /// on a tie, so that a lone client stays on one lane).
    pub(crate) fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let Some(lane) = self
            .lanes
            .iter()
            .min_by_key(|lane| lane.open.load(Ordering::Relaxed))
        else {
            return;
        };
        lane.open.fetch_add(1, Ordering::Relaxed);
        lane.handle.spawn(Counted {
            connection,
            _open: OpenConnection(lane.open.clone()),
        });
    }
}

pin_project_lite::pin_project! {
    /// A connection counted open on its lane. A struct rather than an `async` block: a block
    /// that awaits a future it owns keeps two slots for it, and an open stream keeps its
    /// connection's task whole.
    struct Counted<F> {
        #[pin]
        connection: F,
        _open: OpenConnection,
    }
}

impl<F: Future<Output = ()>> Future for Counted<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().connection.poll(cx)
    }
}

/// Counts a connection open on its lane until it ends (or its lane's runtime drops it).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
