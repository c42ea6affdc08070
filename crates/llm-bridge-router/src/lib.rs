//! From the model name a client sends to the provider that answers it.
//!
//! `provider/model` names go straight to their provider; bare names go to the configured
//! default provider, or to the one provider that lists the model. The router sees providers
//! only as `Arc<dyn ChatProvider>`, so it works the same embedded in another program.

mod resolve;

pub use resolve::{ModelListing, Router, RouterConfig, Served, Target};
