//! A client-facing API dialect besides chat completions (Anthropic Messages, OpenAI
//! Responses, Gemini), as the gateway mounts it.
//!
//! Chat completions stay the pivot: a dialect turns its requests into a pivot
//! [`ChatRequest`] and pivot answers, chunks and errors back into its own shapes. The gateway
//! authenticates, limits, routes, meters and records the pivot request as it would a chat
//! completion, and never learns a vendor format. A dialect is a value the binary registers.

use bytes::Bytes;

use crate::config::ModelKind;
use crate::error::{Error, Result};
use crate::request::ChatRequest;
use crate::response::Usage;

/// An endpoint of a dialect that names the model and the method in the path (Gemini's
/// `/v1beta/models/{model}:{method}`), as [`Ingress::endpoint`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The model named in the path (percent-decoded, without the dialect's `models/`).
    pub model: String,
    /// What is asked.
    pub call: Call,
    /// The [`crate::NativeRequest::operation`] a target speaking the dialect is sent
    /// (Gemini's method name: `generateContent`, `countTokens`, …).
    pub native: &'static str,
}

/// What an [`Endpoint`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// An answer, streamed or not: served like a chat completion.
    Generate {
        /// Whether it is an event stream.
        stream: bool,
    },
    /// The prompt's token count.
    CountTokens,
    /// Embeddings, of one input or a batch: served like `/v1/embeddings`.
    Embed {
        /// Whether the request is a batch (its answer a list).
        batch: bool,
    },
}

/// One request of the dialect, in the pivot.
#[derive(Debug)]
pub struct IngressRequest {
    /// The request as a chat completion.
    pub request: ChatRequest,
    /// Fields of the dialect a pivot target cannot honour, left out (for a debug log).
    pub dropped: Vec<String>,
}

/// A dialect in front of the gateway. See the module docs.
pub trait Ingress: Send + Sync + 'static {
    /// A short name for logs and the `dialect` in access events (`anthropic`).
    fn name(&self) -> &'static str;

    /// The path of its main endpoint (`/v1/messages`), served for `POST`.
    fn path(&self) -> &'static str;

    /// The path of its token-counting endpoint, if it has one (`/v1/messages/count_tokens`).
    fn count_tokens_path(&self) -> Option<&'static str> {
        None
    }

    /// Translates a request body into the pivot.
    fn request(&self, body: &[u8]) -> Result<IngressRequest>;

    /// Renders a complete pivot answer (`chat.completion` JSON) in the dialect; `model` is
    /// the name the client asked for, `request` the client's own request body (some
    /// dialects echo its fields in the answer).
    fn response(&self, completion: &[u8], model: &str, request: &[u8]) -> Result<Bytes>;

    /// A writer that renders a pivot chunk stream as the dialect's event stream.
    fn stream(&self, model: &str, request: &[u8]) -> Box<dyn IngressStream>;

    /// The status and body of an error answered before any byte of the answer was sent.
    fn error(&self, error: &Error) -> (u16, Bytes);

    /// The body answering a token count (`input_tokens` counted by the gateway).
    fn count_tokens_answer(&self, input_tokens: u64) -> Bytes {
        Bytes::from(format!("{{\"input_tokens\":{input_tokens}}}"))
    }

    /// The client's headers that go upstream with a forwarded request (`anthropic-beta`).
    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// The usage of a complete native answer, read without changing it.
    fn native_usage(&self, body: &[u8]) -> Option<Usage> {
        let _ = body;
        None
    }

    /// A reader of a native event stream's usage, fed the bytes as they are forwarded.
    fn native_meter(&self) -> Box<dyn NativeMeter> {
        Box::new(NoUsage)
    }

    /// The endpoint `path` names, for a dialect whose paths name the model and the method
    /// (Gemini); `None` for the others, which are served at [`Ingress::path`].
    fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let _ = path;
        None
    }

    /// The prefix under which `GET` lists the dialect's models (`/v1beta/models`), if it has one.
    fn models_path(&self) -> Option<&'static str> {
        None
    }

    /// Translates a request to an [`Endpoint`] into the pivot (the model and whether it
    /// streams come from the endpoint).
    fn request_at(&self, body: &[u8], endpoint: &Endpoint) -> Result<IngressRequest> {
        let _ = endpoint;
        self.request(body)
    }

    /// Translates an embeddings request to an [`Endpoint`] into an OpenAI `/v1/embeddings` body.
    fn embeddings_request(&self, body: &[u8], endpoint: &Endpoint) -> Result<Bytes> {
        let _ = (body, endpoint);
        Err(Error::invalid_request(format!(
            "{} requests have no embeddings",
            self.name()
        )))
    }

    /// Renders an OpenAI embeddings answer in the dialect.
    fn embeddings_answer(&self, answer: &[u8], endpoint: &Endpoint) -> Result<Bytes> {
        let _ = (answer, endpoint);
        Err(Error::internal(format!(
            "{} renders no embeddings",
            self.name()
        )))
    }

    /// The dialect's answer listing these models (`(id, kind)`), or describing the one given
    /// when `one` is set.
    fn models_answer(&self, models: &[(String, ModelKind)], one: bool) -> Bytes {
        let _ = (models, one);
        Bytes::new()
    }

    /// Whether the client asked for the provider state of translated answers to come back
    /// sealed (Responses' `include: ["reasoning.encrypted_content"]`), so that it can send
    /// it back on the next turn without the gateway keeping anything.
    fn wants_sealed_state(&self, body: &[u8]) -> bool {
        let _ = body;
        false
    }

    /// How the dialect's answers are kept on the gateway, if it keeps them (OpenAI
    /// Responses' `store`, `previous_response_id` and `GET /v1/responses/{id}`).
    fn state(&self) -> Option<&dyn IngressState> {
        None
    }

    /// How the dialect is spoken over a WebSocket on its own path, if it is (Responses'
    /// WebSocket mode: `GET /v1/responses` upgraded, one `response.create` frame per turn).
    fn socket(&self) -> Option<&dyn IngressSocket> {
        None
    }
}

/// One turn asked for on a dialect's WebSocket.
#[derive(Debug, Clone)]
pub struct SocketTurn {
    /// The request as it would have been POSTed (a streamed one).
    pub body: Bytes,
    /// `false` for a turn that only prepares the connection (Responses' `generate: false`):
    /// it is answered at once, without an upstream, and can be continued like any other.
    pub generate: bool,
}

/// A dialect spoken over a WebSocket: each client frame asks for one turn, whose events go
/// back as text frames, the same events as its server-sent event stream.
pub trait IngressSocket: Send + Sync {
    /// A client's text frame → the turn it asks for, or why it cannot be served.
    fn turn(&self, frame: &[u8]) -> Result<SocketTurn>;

    /// A turn refused before its events started, as a frame: `status` and the dialect's error
    /// body (what [`Ingress::error`] renders).
    fn error_frame(&self, status: u16, error_body: &[u8]) -> Bytes;

    /// The events (one frame each) and the whole answer of a turn that generates nothing.
    fn prepared(&self, body: &[u8]) -> (Vec<Bytes>, Bytes);

    /// The whole answer, when `event` (one frame) is a turn's last event.
    fn final_answer(&self, event: &[u8]) -> Option<Bytes>;
}

/// A dialect whose answers the gateway keeps, so that a later request can continue one and a
/// client can read it again. The gateway stores opaque JSON; this says what it means.
pub trait IngressState: Send + Sync {
    /// The id of the earlier answer a request continues (`previous_response_id`).
    fn continues(&self, body: &[u8]) -> Option<String>;

    /// The request with the earlier exchange (its request's input items and its answer)
    /// put before its own input, and no longer naming the earlier answer.
    fn expand(&self, body: &[u8], earlier_input: &str, earlier_answer: &str) -> Result<Bytes>;

    /// Whether the client wants this exchange kept (`store`, true unless `false`).
    fn keeps(&self, body: &[u8]) -> bool;

    /// The request's input items, as a JSON array, to keep.
    fn input_items(&self, body: &[u8]) -> String;

    /// The id of a rendered answer.
    fn answer_id(&self, answer: &[u8]) -> Option<String>;

    /// The body listing a kept exchange's input items (`GET …/{id}/input_items`).
    fn input_items_page(&self, input: &str) -> Bytes;

    /// The body answering the deletion of a kept answer.
    fn deleted(&self, id: &str) -> Bytes;
}

/// Reads usage from a native event stream as its bytes go by (in any pieces).
pub trait NativeMeter: Send {
    /// The next piece of the stream.
    fn feed(&mut self, bytes: &[u8]);

    /// The usage seen so far.
    fn usage(&self) -> Option<Usage>;

    /// Whether the stream's end marker went by (without it, the answer was cut short).
    fn finished(&self) -> bool;
}

struct NoUsage;

impl NativeMeter for NoUsage {
    fn feed(&mut self, _: &[u8]) {}

    fn usage(&self) -> Option<Usage> {
        None
    }

    fn finished(&self) -> bool {
        true
    }
}

/// Renders one stream: every call returns the bytes to send (complete server-sent events,
/// possibly none).
pub trait IngressStream: Send {
    /// One pivot `chat.completion.chunk`.
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes>;

    /// The pivot stream ended.
    fn finish(&mut self) -> Bytes;

    /// The stream failed after it started; nothing follows.
    fn error(&mut self, error: &Error) -> Bytes;

    /// The whole answer the stream rendered, once it completed (for dialects that keep
    /// answers; see [`Ingress::state`]).
    fn final_answer(&self) -> Option<Bytes> {
        None
    }
}
