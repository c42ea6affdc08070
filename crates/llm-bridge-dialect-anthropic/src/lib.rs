//! Anthropic's Messages API ⇄ llm-bridge's pivot (OpenAI chat completions), both ways.
//!
//! **Egress** (the `anthropic` adapter: pivot → Anthropic upstream → pivot):
//! [`messages_request`], [`chat_completion`], [`ChunkTranslator`], [`error_from_status`] /
//! [`error_from_event`]. **Ingress** (`/v1/messages` in front of any provider: Messages →
//! pivot → Messages): [`chat_request`], [`messages_response`], [`EventWriter`],
//! [`error_response`]. Pass-through metering of native bytes: [`usage_from_message_start`],
//! [`usage_from_message_delta`], [`usage_from_message`]. Pure: no sockets, no runtime; the
//! caller decodes SSE and reads headers.
//!
//! # Egress: pivot request → Messages request
//!
//! | pivot | Messages | |
//! |---|---|---|
//! | `system` / `developer` messages | `system` text blocks | wherever they are, in order |
//! | `user` messages | `user` turns | text; `image_url` data URL → `base64` image source, `http(s)` URL → `url` source; `file.file_data` data URL → `document`; audio and other parts → **400** |
//! | `assistant` messages | `assistant` turns | thinking blocks first (see *Thinking*), then text (or `refusal`), then `tool_calls` → `tool_use` (arguments must be a JSON object, else **400**) |
//! | `tool` messages | `tool_result` blocks in a `user` turn | text, or text and image blocks |
//! | consecutive turns of one role | one turn | Anthropic needs alternating turns; empty text is dropped (Anthropic rejects it) |
//! | `tools` (`function`) | `tools` (`name`, `description`, `input_schema`) | other tool types → **400** |
//! | `tool_choice` | `tool_choice` | `auto`, `none`, `required` → `any`, a named function → `tool`; `allowed_tools` → its mode |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use` | |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens` | else the caller's default (the model's ceiling, else [`DEFAULT_MAX_TOKENS`] = 4096) |
//! | `stop` | `stop_sequences` | whitespace-only sequences dropped |
//! | `temperature`, `top_p`, `top_k` | same | temperature clamped to Anthropic's 0–1; all three left out when thinking is on (Anthropic refuses them) |
//! | `reasoning_effort` | `thinking: {type: enabled, budget_tokens}` | [`thinking_budget`]: minimal 1024, low 2048, medium 8192, high 24576, xhigh 32768, none → off. If `max_tokens` ≤ budget, `max_tokens` becomes budget + `max_tokens`: thinking never eats the answer's room. Off when a tool is forced (Anthropic refuses both) |
//! | `response_format` `json_schema` / `json_object` | a forced tool [`JSON_OUTPUT_TOOL`] | see *Structured output* |
//! | `user` | `metadata.user_id` | |
//! | `stream` | `stream` | usage always comes in the stream |
//! | `n` > 1, `logprobs`, audio output | — | **400** |
//! | anything else | — | ignored |
//!
//! # Structured output
//!
//! `response_format` is sent as a tool named [`JSON_OUTPUT_TOOL`] whose `input_schema` is the
//! requested schema (`json_object`: any object), and `tool_choice` forces it (or `any` when
//! the client has tools of its own). Anthropic's `output_format` would need a beta header and
//! is not offered by Messages-compatible services; a forced tool works everywhere. The
//! answer's call to that tool comes back as the message `content` (the JSON text), with
//! `finish_reason: stop`, in whole answers and in streams alike.
//!
//! # Thinking
//!
//! `thinking` blocks → `reasoning_content`, and the exact blocks (signature, redacted data)
//! under `extra_content.anthropic.thinking_blocks` on the message, so that a client sending
//! the message back returns them unchanged; see the `thinking` module for the details, also
//! in streams.
//!
//! # Egress: Messages answer → pivot
//!
//! Text → `content`; `tool_use` → `tool_calls` (`input` serialised as `arguments`); server
//! tool blocks are not shown. `stop_reason` → `finish_reason` ([`finish_reason`]): `end_turn`,
//! `stop_sequence`, `pause_turn` → `stop`; `max_tokens` → `length`; `tool_use` →
//! `tool_calls`; `refusal` → `content_filter`; unknown reasons passed on. Usage: prompt =
//! `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens`, `cached_tokens`
//! = cache reads, `prompt_tokens_details.cache_write_tokens` = cache writes ([`cache_write_tokens`]).
//!
//! # Ingress: Messages request → pivot
//!
//! [`chat_request`]: `system` (string or blocks, joined by blank lines) and mid-conversation
//! `system` messages → system messages; text, image (base64 → data URL, url → URL), PDF
//! (→ `file`) blocks; `tool_use` → `tool_calls`; `tool_result` → `tool` messages before the
//! turn's other content; thinking → `reasoning_content` + the exact blocks; custom tools →
//! function tools; `tool_choice` (`any` → `required`, `disable_parallel_tool_use` →
//! `parallel_tool_calls: false`); `max_tokens`; `stop_sequences` → `stop`; `temperature`;
//! `top_p`; `thinking` → `reasoning_effort` ([`effort_for_budget`]; adaptive → `high`);
//! `output_config.effort` → `reasoning_effort` (`max` → `high`); `output_config.format` /
//! `output_format` → `response_format`; `metadata.user_id` → `user`; `stream`. Left out and
//! listed in [`TranslatedRequest::dropped`]: `cache_control`, `context_management`, `top_k`,
//! `service_tier`, `container`, `mcp_servers`, server tools, unknown fields.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod egress;
mod errors;
mod ids;
mod ingress;
mod thinking;
mod usage;
mod wire;

pub use egress::request::{
    DEFAULT_MAX_TOKENS, JSON_OUTPUT_TOOL, messages_request, thinking_budget,
};
pub use egress::response::{chat_completion, finish_reason};
pub use egress::stream::ChunkTranslator;
pub use errors::{
    error_body, error_from_event, error_from_status, error_response, status_and_type,
};
pub use ingress::events::EventWriter;
pub use ingress::mounted::MessagesIngress;
pub use ingress::request::{TranslatedRequest, chat_request, effort_for_budget};
pub use ingress::response::{messages_response, stop_reason};
pub use usage::{
    MessagesUsage, cache_write_tokens, usage_from_message, usage_from_message_delta,
    usage_from_message_start,
};
