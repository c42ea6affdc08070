//! Gemini `GenerateContentResponse` → OpenAI `chat.completion` (whole answers) and
//! `chat.completion.chunk` (stream events, through [`ChunkTranslator`]). Both share the
//! translation of a candidate's parts. Pure: no I/O, so tests feed recordings straight in.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use llm_bridge_core::{Result, Usage};
use serde_json::{Map, Value, json};

use crate::errors::{bad_response, from_error_value};
use crate::wire::{GenerateContentResponse, Part, PromptFeedback, UsageMetadata};

/// Gemini's finish reason → OpenAI's. Reasons OpenAI has no word for are passed on in lower
/// case (`malformed_function_call`, `other`, `unexpected_tool_call`, …) rather than disguised
/// as `stop`: a client must be able to tell that the answer is not a normal one.
pub fn finish_reason(gemini: &str, has_tool_calls: bool) -> String {
    match gemini {
        "STOP" if has_tool_calls => "tool_calls".into(),
        "STOP" => "stop".into(),
        "MAX_TOKENS" => "length".into(),
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// `usageMetadata` → token counts. Completion = candidates + thoughts (OpenAI counts
/// reasoning as completion); tool-use prompt tokens (e.g. search results) count as prompt.
pub(crate) fn usage(u: &UsageMetadata) -> Usage {
    let prompt = u
        .prompt_token_count
        .unwrap_or(0)
        .saturating_add(u.tool_use_prompt_token_count.unwrap_or(0));
    let reasoning = u.thoughts_token_count.unwrap_or(0);
    let completion = u
        .candidates_token_count
        .unwrap_or(0)
        .saturating_add(reasoning);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        cached_tokens: u.cached_content_token_count.unwrap_or(0),
        reasoning_tokens: reasoning,
        cache_write_tokens: 0,
    }
}

fn parse(body: &[u8]) -> Result<GenerateContentResponse> {
    let response: GenerateContentResponse = serde_json::from_slice(body).map_err(|e| {
        bad_response(format!(
            "Gemini sent a response that is not valid JSON or not a GenerateContentResponse: {e}"
        ))
    })?;
    match &response.error {
        Some(error) => Err(from_error_value(error)),
        None => Ok(response),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 96 unpredictable bits as hex, for ids when Gemini gives none to derive them from.
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // RandomState is seeded from the OS: good enough for ids, no extra dependency.
    let a = RandomState::new().hash_one((n, nanos));
    let b = RandomState::new().hash_one((nanos, n, a));
    format!("{a:016x}{:08x}", b as u32)
}

/// `chatcmpl-<Gemini's responseId>` when there is one (it lets an operator find the answer
/// in Google's logs), else random.
fn completion_id(response_id: Option<&str>) -> String {
    match response_id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            format!("chatcmpl-{id}")
        }
        _ => format!("chatcmpl-{}", random_hex()),
    }
}

/// A tool call id for Gemini 2.x, which gives none: stable (the same answer always yields
/// the same ids) and unique (the completion id is unique, and so is each position in it).
fn call_id(completion_id: &str, choice: u64, n: usize) -> String {
    let mut h = DefaultHasher::new();
    (completion_id, choice, n).hash(&mut h);
    format!("call_{:016x}", h.finish())
}

/// One candidate's parts in OpenAI's terms.
#[derive(Default)]
struct Translated {
    /// The answer text; `None` when the candidate has no text part at all.
    text: Option<String>,
    reasoning: String,
    tool_calls: Vec<Value>,
    /// A signature Gemini put on a part other than a function call (a text answer's).
    signature: Option<String>,
}

impl Translated {
    fn is_empty(&self) -> bool {
        self.text.as_deref().is_none_or(str::is_empty)
            && self.reasoning.is_empty()
            && self.tool_calls.is_empty()
            && self.signature.is_none()
    }
}

/// `extra_content.google.thought_signature`, the place Google's OpenAI-compatible endpoint
/// uses; clients that send the message back unchanged return the signature with it.
fn signature_json(signature: &str) -> Value {
    json!({"google": {"thought_signature": signature}})
}

/// Translates parts; tool calls are numbered from `first_call` (`index` is set in streams).
fn translate_parts(
    parts: &[Part],
    completion_id: &str,
    choice: u64,
    first_call: usize,
    stream: bool,
) -> Translated {
    let mut out = Translated::default();
    for part in parts {
        if let Some(call) = &part.function_call {
            let n = first_call + out.tool_calls.len();
            let id = match call.id.as_deref() {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => call_id(completion_id, choice, n),
            };
            let arguments = match &call.args {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(args) => args.to_string(),
            };
            let mut tool_call = Map::new();
            if stream {
                tool_call.insert("index".into(), n.into());
            }
            tool_call.insert("id".into(), id.into());
            tool_call.insert("type".into(), "function".into());
            tool_call.insert(
                "function".into(),
                json!({"name": call.name, "arguments": arguments}),
            );
            if let Some(signature) = &part.thought_signature {
                tool_call.insert("extra_content".into(), signature_json(signature));
            }
            out.tool_calls.push(Value::Object(tool_call));
            continue;
        }
        if let Some(signature) = &part.thought_signature {
            out.signature = Some(signature.clone());
        }
        if let Some(t) = &part.text {
            if part.is_thought() {
                out.reasoning.push_str(t);
            } else {
                out.text.get_or_insert_with(String::new).push_str(t);
            }
        } else if let Some(code) = &part.executable_code {
            // Only when code execution ran upstream; shown the way Google's SDKs print it.
            let language = code.language.as_deref().unwrap_or("").to_ascii_lowercase();
            let text = out.text.get_or_insert_with(String::new);
            text.push_str(&format!("\n```{language}\n{}\n```\n", code.code));
        } else if let Some(result) = &part.code_execution_result {
            let output = result.output.as_deref().unwrap_or("");
            let text = out.text.get_or_insert_with(String::new);
            text.push_str(&format!("\n```\n{output}\n```\n"));
        } else if part.inline_data.is_some() || part.file_data.is_some() {
            tracing::debug!("gemini answered with media, which chat completions cannot carry");
        }
    }
    out
}

/// Why the prompt was blocked, as a sentence for `refusal`; `None` if it was not.
fn block_message(feedback: &PromptFeedback) -> Option<String> {
    if feedback.block_reason.is_none() && feedback.block_reason_message.is_none() {
        return None;
    }
    let reason = feedback.block_reason.as_deref().unwrap_or("unspecified");
    Some(match &feedback.block_reason_message {
        Some(m) => format!("Gemini blocked the prompt ({reason}): {m}"),
        None => format!("Gemini blocked the prompt ({reason})"),
    })
}

/// A whole Gemini answer → one `chat.completion`. `model` is used when Gemini does not name
/// the model version that answered.
pub fn completion(body: &[u8], model: &str) -> Result<Bytes> {
    let response = parse(body)?;
    let id = completion_id(response.response_id.as_deref());
    let mut choices = Vec::with_capacity(response.candidates.len().max(1));
    if response.candidates.is_empty() {
        let blocked = response.prompt_feedback.as_ref().and_then(block_message);
        let Some(refusal) = blocked else {
            return Err(bad_response("Gemini answered without any candidate"));
        };
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": refusal},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    for (position, candidate) in response.candidates.iter().enumerate() {
        let index = candidate.index.unwrap_or(position as u64);
        let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
        let t = translate_parts(parts, &id, index, 0, false);
        let finish = match &candidate.finish_reason {
            Some(reason) => Value::from(finish_reason(reason, !t.tool_calls.is_empty())),
            None if t.is_empty() => {
                return Err(bad_response(
                    "Gemini answered with an empty candidate and no finish reason",
                ));
            }
            // Older models ended answers without a reason: a complete answer all the same.
            None => Value::from(finish_reason("STOP", !t.tool_calls.is_empty())),
        };
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), t.text.map_or(Value::Null, Value::from));
        if !t.reasoning.is_empty() {
            message.insert("reasoning_content".into(), t.reasoning.into());
        }
        if !t.tool_calls.is_empty() {
            message.insert("tool_calls".into(), t.tool_calls.into());
        }
        if let Some(signature) = &t.signature {
            message.insert("extra_content".into(), signature_json(signature));
        }
        let mut choice = json!({
            "index": index,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        });
        if let (Some(m), Some(c)) = (&candidate.finish_message, choice.as_object_mut()) {
            c.insert("finish_message".into(), m.clone().into());
        }
        choices.push(choice);
    }
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": response.model_version.as_deref().filter(|m| !m.is_empty()).unwrap_or(model),
        "choices": choices,
    });
    if let (Some(u), Some(b)) = (&response.usage_metadata, body.as_object_mut()) {
        b.insert("usage".into(), usage(u).to_openai_json());
    }
    Ok(Bytes::from(body.to_string()))
}

/// How a choice of a stream ended.
enum Finish {
    Gemini(String),
    PromptBlocked,
}

#[derive(Default)]
struct ChoiceState {
    role_sent: bool,
    /// Whether any content went out for this choice.
    delivered: bool,
    calls: usize,
    finish: Option<Finish>,
    finish_message: Option<String>,
}

/// Turns the events of a Gemini stream into `chat.completion.chunk`s, one event at a time.
///
/// Content goes out as soon as it arrives. The finish reason is held back until the stream
/// ends, because Gemini may repeat `finishReason` on events that still carry content; the
/// end then yields one chunk with every choice's `finish_reason` and, when Gemini reported
/// usage, one chunk with `"choices": []` and the last `usageMetadata` as OpenAI `usage`.
pub struct ChunkTranslator {
    id: Option<String>,
    created: u64,
    model: String,
    model_known: bool,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Option<Usage>,
    finished: bool,
}

impl ChunkTranslator {
    /// A translator for one stream; `model` names the model until Gemini names its version.
    pub fn new(model: &str) -> Self {
        ChunkTranslator {
            id: None,
            created: now(),
            model: model.to_owned(),
            model_known: false,
            choices: BTreeMap::new(),
            usage: None,
            finished: false,
        }
    }

    fn chunk(&self, id: &str, choices: Vec<Value>) -> Bytes {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        Bytes::from(chunk.to_string())
    }

    /// One event's data → the chunks to send (none when it carried nothing to show). An error
    /// object from Gemini, or data that is not a response, is an `Err`: the stream ends there.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>> {
        let response = parse(data)?;
        let id = self
            .id
            .get_or_insert_with(|| completion_id(response.response_id.as_deref()))
            .clone();
        if !self.model_known {
            if let Some(version) = response.model_version.as_deref().filter(|m| !m.is_empty()) {
                self.model = version.to_owned();
            }
            self.model_known = true;
        }
        if let Some(u) = &response.usage_metadata {
            self.usage = Some(usage(u));
        }
        let mut choices = Vec::new();
        if response.candidates.is_empty() {
            if let Some(refusal) = response.prompt_feedback.as_ref().and_then(block_message) {
                let state = self.choices.entry(0).or_default();
                if state.finish.is_none() {
                    state.finish = Some(Finish::PromptBlocked);
                    let mut delta = Map::new();
                    if !state.role_sent {
                        state.role_sent = true;
                        delta.insert("role".into(), "assistant".into());
                    }
                    delta.insert("refusal".into(), refusal.into());
                    choices.push(content_choice(0, delta));
                }
            }
        }
        for (position, candidate) in response.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u64);
            let state = self.choices.entry(index).or_default();
            let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
            let t = translate_parts(parts, &id, index, state.calls, true);
            state.calls += t.tool_calls.len();
            if let Some(reason) = &candidate.finish_reason {
                state.finish = Some(Finish::Gemini(reason.clone()));
            }
            if candidate.finish_message.is_some() {
                state.finish_message.clone_from(&candidate.finish_message);
            }
            if t.is_empty() {
                continue;
            }
            state.delivered = true;
            let mut delta = Map::new();
            if !state.role_sent {
                state.role_sent = true;
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(text) = t.text.filter(|t| !t.is_empty()) {
                delta.insert("content".into(), text.into());
            }
            if !t.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), t.reasoning.into());
            }
            if !t.tool_calls.is_empty() {
                delta.insert("tool_calls".into(), t.tool_calls.into());
            }
            if let Some(signature) = &t.signature {
                delta.insert("extra_content".into(), signature_json(signature));
            }
            choices.push(content_choice(index, delta));
        }
        if choices.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![self.chunk(&id, choices)])
    }

    /// At the end of Gemini's stream: the finish chunk and the usage chunk. A choice that got
    /// neither content nor a finish reason is an `Err`: Gemini answered nothing.
    pub fn finish(&mut self) -> Result<Vec<Bytes>> {
        if self.finished {
            return Ok(Vec::new());
        }
        self.finished = true;
        let Some(id) = self.id.clone() else {
            return Err(bad_response(
                "Gemini ended the stream without sending anything",
            ));
        };
        if self.choices.is_empty() {
            return Err(bad_response("Gemini ended the stream without an answer"));
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, state) in &mut self.choices {
            let reason = match state.finish.take() {
                Some(Finish::PromptBlocked) => "content_filter".to_owned(),
                Some(Finish::Gemini(r)) => finish_reason(&r, state.calls > 0),
                // The body ended cleanly (a cut connection is an error before this point)
                // after content but without a reason, as older models did.
                None if state.delivered => finish_reason("STOP", state.calls > 0),
                None => {
                    return Err(bad_response(
                        "Gemini ended the stream without content or a finish reason",
                    ));
                }
            };
            let mut delta = Map::new();
            if !state.role_sent {
                delta.insert("role".into(), "assistant".into());
            }
            let mut choice = json!({
                "index": index,
                "delta": delta,
                "logprobs": null,
                "finish_reason": reason,
            });
            if let (Some(m), Some(c)) = (&state.finish_message, choice.as_object_mut()) {
                c.insert("finish_message".into(), m.clone().into());
            }
            choices.push(choice);
        }
        let mut out = vec![self.chunk(&id, choices)];
        if let Some(u) = self.usage {
            let chunk = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": u.to_openai_json(),
            });
            out.push(Bytes::from(chunk.to_string()));
        }
        Ok(out)
    }
}

fn content_choice(index: u64, delta: Map<String, Value>) -> Value {
    json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null})
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
