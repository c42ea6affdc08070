//! Ingress: a client speaking Messages → pivot request → any provider → Messages answer.

pub(crate) mod events;
pub(crate) mod mounted;
pub(crate) mod request;
pub(crate) mod response;
