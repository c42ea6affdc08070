//! The Responses API as the gateway mounts it (`POST /v1/responses`).

use bytes::Bytes;
use llm_bridge_core::{
    Error, Ingress, IngressRequest, IngressState, IngressStream, NativeMeter, Result, Usage,
};
use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::errors::error_response;
use crate::ingress::events::EventWriter;
use crate::ingress::request::{chat_request, prepend_items};
use crate::ingress::response::{Echo, responses_response};
use crate::usage::{final_event, usage_from_response};

/// OpenAI's Responses API in front of the gateway: answers echo the client's request fields
/// ([`Echo`]), and are kept for `previous_response_id` and `GET /v1/responses/{id}` unless
/// the request says `store: false` ([`IngressState`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponsesIngress;

impl Ingress for ResponsesIngress {
    fn name(&self) -> &'static str {
        "responses"
    }

    fn path(&self) -> &'static str {
        "/v1/responses"
    }

    fn request(&self, body: &[u8]) -> Result<IngressRequest> {
        let translated = chat_request(body)?;
        Ok(IngressRequest {
            request: translated.request,
            dropped: translated.dropped,
        })
    }

    fn response(&self, completion: &[u8], model: &str, request: &[u8]) -> Result<Bytes> {
        responses_response(completion, model, &Echo::from_slice(request))
    }

    fn stream(&self, model: &str, request: &[u8]) -> Box<dyn IngressStream> {
        Box::new(EventWriter::with_echo(model, Echo::from_slice(request)))
    }

    fn error(&self, error: &Error) -> (u16, Bytes) {
        error_response(error)
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["openai-beta"]
    }

    fn native_usage(&self, body: &[u8]) -> Option<Usage> {
        usage_from_response(body)
    }

    fn native_meter(&self) -> Box<dyn NativeMeter> {
        Box::new(ResponsesMeter::default())
    }

    fn state(&self) -> Option<&dyn IngressState> {
        Some(self)
    }

    fn socket(&self) -> Option<&dyn llm_bridge_core::IngressSocket> {
        Some(self)
    }

    fn wants_sealed_state(&self, body: &[u8]) -> bool {
        top(body)
            .include
            .and_then(|raw| serde_json::from_str::<Vec<Value>>(raw.get()).ok())
            .is_some_and(|list| list.iter().any(|i| i == "reasoning.encrypted_content"))
    }
}

/// The top-level fields of a request body, or none when it is not a JSON object.
fn fields(body: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The few top-level fields the state hooks read, each left as its raw JSON text. Reading
/// them skips the rest of the body without building it: the hooks run on every request (and
/// `answer_id` on every answer), and building the whole tree for each cost more than the
/// request's translation (callgrind: five whole parses of body or answer per kept answer).
#[derive(Default)]
struct Top<'a> {
    previous_response_id: Option<&'a RawValue>,
    store: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    include: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Top<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Top<'de>, A::Error> {
                let mut top = Top::default();
                // A key given twice counts once, the last time, as in a parsed object.
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "previous_response_id" => &mut top.previous_response_id,
                        "store" => &mut top.store,
                        "input" => &mut top.input,
                        "include" => &mut top.include,
                        "id" => &mut top.id,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(top)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// [`Top`] of a body; nothing when it is not a JSON object.
fn top(body: &[u8]) -> Top<'_> {
    serde_json::from_slice(body).unwrap_or_default()
}

/// A raw JSON value that is a string, unescaped.
fn text(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str::<String>(raw?.get()).ok()
}

impl IngressState for ResponsesIngress {
    fn continues(&self, body: &[u8]) -> Option<String> {
        text(top(body).previous_response_id).filter(|id| !id.is_empty())
    }

    fn expand(&self, body: &[u8], earlier_input: &str, earlier_answer: &str) -> Result<Bytes> {
        let mut map = fields(body);
        let input: Vec<Value> = serde_json::from_str(earlier_input).unwrap_or_default();
        let answer: Value = serde_json::from_str(earlier_answer).unwrap_or(Value::Null);
        let output = answer["output"].as_array().cloned().unwrap_or_default();
        prepend_items(&mut map, input, output);
        serde_json::to_vec(&map)
            .map(Bytes::from)
            .map_err(|e| Error::internal(format!("could not expand the request: {e}")))
    }

    fn keeps(&self, body: &[u8]) -> bool {
        top(body).store.is_none_or(|raw| raw.get() != "false")
    }

    fn input_items(&self, body: &[u8]) -> String {
        let items = match top(body).input.map(|raw| serde_json::from_str(raw.get())) {
            Some(Ok(Value::String(text))) => {
                vec![json!({"type": "message", "role": "user", "content": text})]
            }
            Some(Ok(Value::Array(list))) => list,
            _ => Vec::new(),
        };
        // `to_string` of a `Value` formats through `fmt::Write`; `to_vec` writes bytes.
        String::from_utf8(serde_json::to_vec(&items).unwrap_or_default()).unwrap_or_default()
    }

    fn answer_id(&self, answer: &[u8]) -> Option<String> {
        // The answers this dialect writes begin with their id (`response_json`): read it
        // there, and scan the object only for any other shape.
        if let Some(rest) = answer.strip_prefix(br#"{"id":""#) {
            if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
                if rest[end] == b'"' {
                    return std::str::from_utf8(&rest[..end]).ok().map(str::to_owned);
                }
            }
        }
        text(top(answer).id)
    }

    fn input_items_page(&self, input: &str) -> Bytes {
        let items: Vec<Value> = serde_json::from_str(input).unwrap_or_default();
        // Items get ids as OpenAI gives them; the newest first, as OpenAI lists them.
        let data: Vec<Value> = items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                if let Some(map) = item.as_object_mut() {
                    map.entry("id")
                        .or_insert_with(|| json!(format!("item_{i}")));
                    map.entry("type").or_insert_with(|| json!("message"));
                }
                item
            })
            .rev()
            .collect();
        let first = data
            .first()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        let last = data
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        Bytes::from(
            json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false})
                .to_string(),
        )
    }

    fn deleted(&self, id: &str) -> Bytes {
        Bytes::from(json!({"id": id, "object": "response", "deleted": true}).to_string())
    }
}

/// The events that end a Responses stream; their `response.usage` is the answer's usage.
const FINAL: [&[u8]; 3] = [
    b"\"response.completed\"",
    b"\"response.incomplete\"",
    b"\"response.failed\"",
];

/// Lines longer than this are not kept (nothing a real stream sends).
const MAX_LINE: usize = 64 << 20;

/// How much of a line is looked at to tell whether it must be kept whole.
const HEAD: usize = 128;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads usage from a native Responses event stream as it is forwarded: the `response`
/// object of `response.completed` / `response.incomplete` / `response.failed` carries it,
/// and any of them ends the answer. `data:` lines whose first key is a `type` naming another
/// event (OpenAI writes `type` first) are skipped without being buffered; the others are
/// kept whole and parsed only when they mention a final event.
#[derive(Default)]
pub struct ResponsesMeter {
    /// The unfinished last line of what was fed.
    line: Vec<u8>,
    /// The current line was found not to matter: its bytes are not kept.
    skip: bool,
    usage: Option<Usage>,
    finished: bool,
}

impl ResponsesMeter {
    /// Decides, from a line's head, whether it can be skipped.
    fn judge(&mut self) {
        if self.skip || self.line.len() < HEAD {
            return;
        }
        if self.line.len() > MAX_LINE {
            self.skip = true;
            self.line = Vec::new();
            return;
        }
        let Some(data) = self.line.strip_prefix(b"data:") else {
            // Not a data line (a long comment): nothing to read in it.
            self.skip = true;
            self.line.clear();
            return;
        };
        let data = data.trim_ascii_start();
        let after = data
            .strip_prefix(b"{\"type\":\"")
            .or_else(|| data.strip_prefix(b"{\"type\": \""));
        if let Some(rest) = after {
            let head = &rest[..rest.len().min(HEAD)];
            if let Some(end) = head.iter().position(|b| *b == b'"') {
                let name = &head[..end];
                let is_final = FINAL.iter().any(|f| &f[1..f.len() - 1] == name);
                if !is_final {
                    self.skip = true;
                    self.line.clear();
                }
            }
        }
    }

    fn line_done(&mut self) {
        let line = std::mem::take(&mut self.line);
        let skipped = std::mem::replace(&mut self.skip, false);
        if skipped {
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if !FINAL.iter().any(|f| contains(data, f)) {
            return;
        }
        if let Some(usage) = final_event(data) {
            self.finished = true;
            if usage.is_some() {
                self.usage = usage;
            }
        }
    }
}

impl NativeMeter for ResponsesMeter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            if !self.skip {
                self.line.extend_from_slice(&bytes[..end]);
            }
            self.line_done();
            bytes = &bytes[end + 1..];
        }
        if !self.skip {
            self.line.extend_from_slice(bytes);
            self.judge();
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finished(&self) -> bool {
        self.finished
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

    fn final_answer(&self) -> Option<Bytes> {
        self.final_response()
            .and_then(|r| serde_json::to_vec(&r).ok())
            .map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_meter_reads_usage_from_events_in_any_pieces() {
        let long = "x".repeat(300);
        let stream = format!(
            concat!(
                "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"r\",\"usage\":null}}}}\n\n",
                "event: response.output_text.delta\r\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"\\\"response.completed\\\"{long}\"}}\r\n\r\n",
                "event: response.completed\ndata: {{\"response\":{{\"id\":\"r\",\"instructions\":\"{long}\",\"usage\":{{\"input_tokens\":12,\"input_tokens_details\":{{\"cached_tokens\":3}},\"output_tokens\":9,\"output_tokens_details\":{{\"reasoning_tokens\":4}},\"total_tokens\":21}}}},\"sequence_number\":2,\"type\":\"response.completed\"}}\n\n",
            ),
            long = long
        );
        for piece in [1, 7, 64, 200, stream.len()] {
            let mut meter = ResponsesMeter::default();
            for part in stream.as_bytes().chunks(piece) {
                meter.feed(part);
            }
            let usage = meter.usage().unwrap();
            assert_eq!(usage.prompt_tokens, 12, "pieces of {piece}");
            assert_eq!(usage.cached_tokens, 3);
            assert_eq!(usage.completion_tokens, 9);
            assert_eq!(usage.reasoning_tokens, 4);
            assert!(meter.finished());
        }
        let mut cut = ResponsesMeter::default();
        cut.feed(&stream.as_bytes()[..stream.len() - 40]);
        assert!(!cut.finished());
        assert!(cut.usage().is_none());
    }

    #[test]
    fn a_failed_stream_is_finished() {
        let mut meter = ResponsesMeter::default();
        meter.feed(b"data: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{\"status\":\"failed\",\"usage\":null}}\n\n");
        assert!(meter.finished());
        assert!(meter.usage().is_none());
    }

    #[test]
    fn the_state_hooks_read_top_level_fields_as_a_parsed_object_would() {
        let r = ResponsesIngress;
        let continues = |body: &str| r.continues(body.as_bytes());
        assert_eq!(
            continues(
                r#"{"input":[{"previous_response_id":"no"}],"previous_response_id":"resp_1"}"#
            ),
            Some("resp_1".into())
        );
        assert_eq!(
            continues(r#"{"previous_response_id":"a","previous_response_id":"b"}"#),
            Some("b".into())
        );
        assert_eq!(
            continues(r#"{"previous_response_id":"r\u0065sp"}"#),
            Some("resp".into())
        );
        assert_eq!(continues(r#"{"previous_response_id":null}"#), None);
        assert_eq!(continues(r#"{"previous_response_id":""}"#), None);
        assert_eq!(continues(r#"{"previous_response_id":7}"#), None);
        assert_eq!(continues("[1]"), None);
        assert_eq!(continues("not json"), None);
        for kept in [r#"{"store":true}"#, "{}", r#"{"store":null}"#, "oops"] {
            assert!(r.keeps(kept.as_bytes()), "{kept}");
        }
        for unkept in [r#"{"input":"x","store":false}"#, r#"{ "store" : false }"#] {
            assert!(!r.keeps(unkept.as_bytes()), "{unkept}");
        }
        assert_eq!(
            r.input_items(br#"{"input":"hi"}"#),
            r#"[{"type":"message","role":"user","content":"hi"}]"#
        );
        assert_eq!(
            r.input_items(br#"{"input": [ {"type":"message", "role":"user","content":"a"} ]}"#),
            r#"[{"type":"message","role":"user","content":"a"}]"#
        );
        assert_eq!(r.input_items(br#"{"input":null}"#), "[]");
        assert_eq!(
            r.answer_id(br#"{"output":[{"id":"msg_1"}],"id":"resp_9"}"#),
            Some("resp_9".into())
        );
        assert_eq!(
            r.answer_id(br#"{"id":"resp_8","output":[]}"#),
            Some("resp_8".into())
        );
        assert_eq!(
            r.answer_id(br#"{"id":"re\u0073p","output":[]}"#),
            Some("resp".into())
        );
        assert_eq!(r.answer_id(br#"{"id":7}"#), None);
        assert!(r.wants_sealed_state(br#"{"include":["reasoning.encrypted_content"]}"#));
        assert!(!r.wants_sealed_state(br#"{"include":"reasoning.encrypted_content"}"#));
        assert!(!r.wants_sealed_state(br#"{"input":"x"}"#));
    }

    #[test]
    fn the_echo_of_raw_bytes_is_the_echo_of_the_parsed_body() {
        let body = r#"{"model":"m","input":[{"role":"user","content":"hi"}],"instructions":"be brief",
            "tools":[{"type":"web_search"}],"text":{"verbosity":"low"},"reasoning":{"effort":"low"},
            "temperature":0.2,"store":false,"metadata":{"a":"b"},"user":null,"top_p":null,
            "temperature":0.3}"#;
        let parsed: Map<String, Value> = serde_json::from_str(body).unwrap();
        assert_eq!(
            Echo::from_slice(body.as_bytes()),
            Echo::from_request(&parsed)
        );
        assert_eq!(Echo::from_slice(b"[]"), Echo::default());
    }
}
