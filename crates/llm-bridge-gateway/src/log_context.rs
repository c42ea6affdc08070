//! The request a log line belongs to: every line logged while a request is served carries
//! its id and transport (JSON: `"span":{"request_id":…,"transport":…,"name":"request"}`;
//! text: `request_id=… transport=…` at the end), as the tracing span that did it before.
//!
//! A thread-local set around each poll of the request's futures does what the span did for
//! a fraction of its cost (callgrind, a chat completion: ~157k instructions with the span,
//! 149.8k with it filtered out, 151.4k with this): the span's filter and registry did
//! bookkeeping at every enter and exit, its fields were formatted at creation, and tracing's
//! registry kept a slot and an extension map for every request that was ever open at once.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Which request a log line belongs to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogContext {
    request_id: Arc<str>,
    transport: &'static str,
}

thread_local! {
    static CURRENT: RefCell<Option<LogContext>> = const { RefCell::new(None) };
}

impl LogContext {
    /// The context of request `request_id`, served over `transport` (`http`, `websocket`).
    pub fn new(request_id: Arc<str>, transport: &'static str) -> Self {
        LogContext {
            request_id,
            transport,
        }
    }

    /// The request's id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// How the request came (`http`, `websocket`).
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Makes this the current request of this thread until the guard drops (then the one
    /// before it is current again).
    pub fn enter(&self) -> Entered {
        let before = CURRENT.with(|c| c.replace(Some(self.clone())));
        Entered {
            before,
            _not_send: PhantomData,
        }
    }

    /// `future`, with this the current request whenever it is polled.
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped {
            context: self,
            future,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future run in a request's context (see [`LogContext::scope`]). A struct rather
    /// than an `async fn`, which would hold the (large) future twice.
    pub struct Scoped<F> {
        context: LogContext,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.context.enter();
        this.future.poll(cx)
    }
}

/// Calls `f` with the request being served on this thread, if any.
pub fn with_current<R>(f: impl FnOnce(Option<&LogContext>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// Keeps a request current (see [`LogContext::enter`]); it stays on its thread.
#[must_use = "the request is current only while the guard lives"]
pub struct Entered {
    before: Option<LogContext>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let before = self.before.take();
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_id() -> Option<String> {
        with_current(|c| c.map(|c| c.request_id().to_owned()))
    }

    #[test]
    fn a_request_is_current_while_entered_and_nests() {
        let outer = LogContext::new("req-1".into(), "http");
        let inner = LogContext::new("req-2".into(), "websocket");
        assert_eq!(current_id(), None);
        {
            let _a = outer.enter();
            assert_eq!(current_id().as_deref(), Some("req-1"));
            {
                let _b = inner.enter();
                assert_eq!(current_id().as_deref(), Some("req-2"));
            }
            assert_eq!(current_id().as_deref(), Some("req-1"));
        }
        assert_eq!(current_id(), None);
    }

    #[tokio::test]
    async fn a_scoped_future_sees_its_request_at_every_poll_and_nothing_leaks_out() {
        let context = LogContext::new("req-3".into(), "http");
        let seen = context
            .scope(async {
                let first = current_id();
                tokio::task::yield_now().await;
                (first, current_id())
            })
            .await;
        assert_eq!(seen, (Some("req-3".to_owned()), Some("req-3".to_owned())));
        assert_eq!(current_id(), None);
    }
}
