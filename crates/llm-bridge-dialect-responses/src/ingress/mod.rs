//! Ingress: a client speaking Responses → pivot request → any provider → Responses answer.

pub(crate) mod events;
pub(crate) mod mounted;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod socket;
