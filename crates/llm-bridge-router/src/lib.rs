//! From the model name a client sends to the upstream that answers it, and on to the next
//! one when it fails.
//!
//! `provider/model` names go straight to their provider; bare names go to the configured
//! default provider, or to the one provider that lists the model; route aliases spread over
//! several targets by a [`Strategy`]. Failures an attempt may fix (connection errors,
//! timeouts before the answer, 429, 5xx) are retried with exponential backoff and full
//! jitter, honouring `Retry-After` up to a cap, then the next target is tried — only while
//! nothing has reached the client. A target that keeps failing rests (circuit breaker with a
//! half-open probe). The router sees providers only as `Arc<dyn ChatProvider>`, so it works
//! the same embedded in another program (see `examples/embed.rs`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod affinity;
mod config;
mod health;
mod retry;
mod router;
mod strategy;

pub use config::{Affinity, CooldownConfig, RouteConfig, RouterConfig, Strategy, TargetSpec};
pub use health::TargetHealthView;
pub use router::{
    Attempt, AttemptTrace, Dispatched, ModelListing, Plan, RouteView, Router, Served, Target,
};
pub use strategy::{Random, XorShift};
