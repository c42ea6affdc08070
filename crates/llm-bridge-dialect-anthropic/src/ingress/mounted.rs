//! The Messages API as the gateway mounts it (`POST /v1/messages`, `/v1/messages/count_tokens`).

use bytes::Bytes;
use llm_bridge_core::{Error, Ingress, IngressRequest, IngressStream, Result};

use crate::errors::error_response;
use crate::ingress::events::EventWriter;
use crate::ingress::request::chat_request;
use crate::ingress::response::messages_response;

/// Anthropic's Messages API in front of the gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessagesIngress;

impl Ingress for MessagesIngress {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn path(&self) -> &'static str {
        "/v1/messages"
    }

    fn count_tokens_path(&self) -> Option<&'static str> {
        Some("/v1/messages/count_tokens")
    }

    fn request(&self, body: &[u8]) -> Result<IngressRequest> {
        let translated = chat_request(body)?;
        Ok(IngressRequest {
            request: translated.request,
            dropped: translated.dropped,
        })
    }

    fn response(&self, completion: &[u8], model: &str) -> Result<Bytes> {
        messages_response(completion, model)
    }

    fn stream(&self, model: &str) -> Box<dyn IngressStream> {
        Box::new(EventWriter::new(model))
    }

    fn error(&self, error: &Error) -> (u16, Bytes) {
        error_response(error)
    }
}

impl IngressStream for EventWriter {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes> {
        self.push(chunk)
    }

    fn finish(&mut self) -> Bytes {
        EventWriter::finish(self)
    }

    fn error(&mut self, error: &Error) -> Bytes {
        self.error_event(error)
    }
}
