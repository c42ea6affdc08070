//! OpenAI's Responses API ⇄ llm-bridge's pivot (OpenAI chat completions), for
//! `/v1/responses` in front of providers that do not speak Responses.
//!
//! **Ingress** (Responses → pivot → any provider → Responses): [`chat_request`],
//! [`responses_response`], [`EventWriter`], [`error_response`], mounted as
//! [`ResponsesIngress`]. For a store: [`prepend_items`] resolves `previous_response_id`.
//! Pass-through metering of native bytes (a provider that speaks Responses):
//! [`usage_from_response`], [`ResponsesMeter`]. Pure: no sockets, no runtime; the caller
//! decodes SSE and reads headers. There is no egress: a provider that speaks Responses gets
//! the client's bytes.
//!
//! # Request: Responses → pivot
//!
//! | Responses | pivot | |
//! |---|---|---|
//! | `instructions` (string) | first `system` message | as input items: their messages as system turns |
//! | `input` (string) | one `user` message | |
//! | `message` items, role `user` | `user` messages | `input_text` → text; `input_image` (`image_url`, a URL or data URL; `detail`) → `image_url`; `input_file` with `file_data` → `file`; `file_id` images and files, audio → left out |
//! | `message` items, role `system` / `developer` | `system` messages | text parts joined by blank lines; `developer` → `system` (every chat target takes it; OpenAI treats both alike) |
//! | `message` items, role `assistant` | `assistant` message | `output_text` → `content`, `refusal` → `refusal` |
//! | `reasoning` items | `reasoning_content` of the assistant message they precede | `content` reasoning text, else the `summary` texts joined by blank lines; `encrypted_content` kept opaque under `extra_content.llm_bridge.encrypted_reasoning` (a list, input order; [`ENCRYPTED_REASONING`]) for the layer that seals reasoning to unseal it |
//! | `function_call` items | `tool_calls` of the assistant message | `call_id` → `id`; consecutive assistant-side items (reasoning, message, calls) make one assistant message |
//! | `function_call_output` items | `tool` messages | `call_id` → `tool_call_id`; text output (parts joined by newlines); images and files returned go in a `user` message after the tool messages |
//! | other items (`web_search_call`, `local_shell_call`, `custom_tool_call`, `item_reference`, `compaction`, …) | — | left out |
//! | `tools` of type `function` | `{type: function, function: {name, description, parameters, strict}}` | a function without a name → **400** |
//! | built-in tools (`web_search`, `file_search`, `code_interpreter`, `computer_use_preview`, `local_shell`, `shell`, `custom`, `mcp`, `namespace`, …) | — | left out, never an error (Codex sends `web_search` to everyone) |
//! | `tool_choice` | `tool_choice` | `auto`, `none`, `required`; `{type: function, name}` → `{type: function, function: {name}}` (left out if that function is not sent); `allowed_tools` → its mode; a built-in tool → left out; left out when no tool remains |
//! | `parallel_tool_calls` | same | only with tools (chat targets refuse it alone) |
//! | `text.format` | `response_format` | `json_schema` (`name`, `schema`, `strict`, `description`) and `json_object`; `text` → nothing; `text.verbosity` left out |
//! | `reasoning.effort` | `reasoning_effort` | `reasoning.summary` left out |
//! | `max_output_tokens` | `max_completion_tokens` | |
//! | `temperature`, `top_p`, `stream`, `user`, `prompt_cache_key`, `safety_identifier` | same | `prompt_cache_key` reaches OpenAI-compatible targets and drives session affinity |
//! | `store`, `include`, `previous_response_id`, `metadata`, `client_metadata`, `truncation`, `service_tier`, `background`, `conversation`, `prompt`, `max_tool_calls`, `top_logprobs`, `stream_options`, `prompt_cache_retention` | — | left out of the pivot: the gateway keeps (`store`) and resolves (`previous_response_id`, see [`prepend_items`]) responses itself; `metadata` and the rest come back in the echo only |
//!
//! Everything left out is named in [`TranslatedRequest::dropped`].
//!
//! # Answer: pivot → Responses
//!
//! [`responses_response`]: `reasoning_content` → a `reasoning` item (`summary: [{type:
//! summary_text, text}]`; `encrypted_content` when a sealing layer put one at
//! `extra_content.llm_bridge.encrypted_reasoning`), text and `refusal` → one `message` item
//! (`output_text` with `annotations: []`, `refusal`), `tool_calls` → `function_call` items.
//! `finish_reason` `length` → `status: incomplete`, `incomplete_details.reason:
//! max_output_tokens`; `content_filter` → incomplete, `content_filter`; else `completed`.
//! Usage: `input_tokens` (+ `input_tokens_details.cached_tokens`), `output_tokens`
//! (+ `output_tokens_details.reasoning_tokens`), `total_tokens`. The request fields OpenAI
//! repeats in a response come from an [`Echo`].
//!
//! # Ids
//!
//! [`response_id`]: `resp_` + 12 hex digits of the time in milliseconds + 12 random hex
//! digits + a 16-hex-digit fingerprint of the upstream's chat id (unique even when an
//! upstream repeats ids; ordered by time, so that a store's index grows at its end). Items: [`item_id`] —
//! `rs_`, `msg_`, `fc_` + the response id's body + `_<output index>`, the same in the stream
//! and in the final response. Tool calls keep the upstream's call id as `call_id`.
//!
//! # Stream
//!
//! See [`EventWriter`]: every event is `event: <type>\ndata: <json>\n\n` with a
//! `sequence_number` from 0; items are written one at a time and every `.delta` is closed
//! by its `.done`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod errors;
mod ids;
mod ingress;
mod usage;

pub use errors::{error_body, error_response};
pub use ids::{item_id, response_id};
pub use ingress::events::EventWriter;
pub use ingress::mounted::{ResponsesIngress, ResponsesMeter};
pub use ingress::request::{
    ENCRYPTED_REASONING, TranslatedRequest, chat_request, chat_request_from_map, prepend_items,
};
pub use ingress::response::{Echo, response_usage, responses_response, status_for};
pub use usage::usage_from_response;
