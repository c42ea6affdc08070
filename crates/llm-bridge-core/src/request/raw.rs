//! A chat request kept as the client's bytes.
//!
//! Most requests go to an OpenAI-compatible upstream with nothing changed but `model`,
//! `stream` and `stream_options.include_usage`. For those the gateway reads the few fields
//! it needs in one pass that builds no JSON tree (a tree of a small request costs about as
//! many allocations as the rest of the request path), and writes the upstream body by
//! splicing the changed values into the client's bytes. Anything out of the ordinary (a
//! field of another type, a repeated field, a lone surrogate) is left to the full parse,
//! which also words the errors.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::session_hash;

/// The request as the client sent it, what the gateway read of it, and its edits.
#[derive(Clone)]
pub(super) struct Raw {
    bytes: Bytes,
    sent: Sent,
    /// Where the values the gateway may change are, and where the body's closing brace is.
    spans: Spans,
    edits: Edits,
}

/// The fields the gateway reads, as sent.
#[derive(Clone, Default)]
struct Sent {
    model: String,
    stream: Option<bool>,
    /// `stream_options.include_usage`, when it is a boolean.
    include_usage: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    prompt_cache_key: Option<u64>,
    user: Option<u64>,
}

#[derive(Clone)]
struct Spans {
    model: Range<usize>,
    stream: Option<Range<usize>>,
    stream_options: Option<Range<usize>>,
    end: usize,
}

/// What the gateway changed.
#[derive(Clone, Default)]
struct Edits {
    model: Option<String>,
    stream: Option<bool>,
    include_usage: Option<bool>,
}

impl Raw {
    /// Reads a request body that the chat completions API accepts, or `None` when it is
    /// invalid or unusual in any way: the full parse then decides, and words the error.
    pub(super) fn read(bytes: Bytes) -> Option<Raw> {
        let head = {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let head = de.deserialize_map(HeadVisitor).ok()?;
            de.end().ok()?;
            head
        };
        let model: String = serde_json::from_str(head.model?.get()).ok()?;
        if model.trim().is_empty() || head.messages? == 0 {
            return None;
        }
        let stream: Option<bool> = match head.stream {
            Some(v) => serde_json::from_str(v.get()).ok()?,
            None => None,
        };
        let include_usage = match head.stream_options {
            Some(v) => serde_json::from_str::<Option<StreamOptions>>(v.get())
                .ok()?
                .and_then(|o| o.include_usage),
            None => None,
        };
        let base = bytes.as_ptr() as usize;
        let span = |v: &RawValue| {
            let start = v.get().as_ptr() as usize - base;
            start..start + v.get().len()
        };
        let spans = Spans {
            model: head.model.map(span)?,
            stream: head.stream.map(span),
            stream_options: head.stream_options.map(span),
            end: bytes.iter().rposition(|b| *b == b'}')?,
        };
        let sent = Sent {
            model,
            stream,
            include_usage,
            max_tokens: head.max_tokens,
            max_completion_tokens: head.max_completion_tokens,
            prompt_cache_key: head.prompt_cache_key,
            user: head.user,
        };
        Some(Raw {
            bytes,
            sent,
            spans,
            edits: Edits::default(),
        })
    }

    pub(super) fn model(&self) -> &str {
        self.edits.model.as_deref().unwrap_or(&self.sent.model)
    }

    pub(super) fn set_model(&mut self, model: &str) {
        self.edits.model = Some(model.to_owned());
    }

    pub(super) fn stream(&self) -> bool {
        self.edits.stream.or(self.sent.stream).unwrap_or(false)
    }

    /// `stream` as sent (`None` when absent or null), or as set.
    pub(super) fn stream_given(&self) -> Option<bool> {
        self.edits.stream.or(self.sent.stream)
    }

    pub(super) fn set_stream(&mut self, stream: bool) {
        self.edits.stream = Some(stream);
    }

    pub(super) fn include_usage(&self) -> bool {
        self.edits
            .include_usage
            .or(self.sent.include_usage)
            .unwrap_or(false)
    }

    pub(super) fn set_include_usage(&mut self, include: bool) {
        self.edits.include_usage = Some(include);
    }

    pub(super) fn max_tokens(&self) -> Option<u64> {
        self.sent.max_tokens
    }

    pub(super) fn max_completion_tokens(&self) -> Option<u64> {
        self.sent.max_completion_tokens
    }

    /// The session the body names: its `prompt_cache_key`, else its `user`.
    pub(super) fn session(&self) -> Option<u64> {
        self.sent.prompt_cache_key.or(self.sent.user)
    }

    /// The body as a JSON object, with the edits made.
    pub(super) fn to_map(&self) -> Map<String, Value> {
        // `read` accepted these bytes, so they parse.
        let mut body: Map<String, Value> = serde_json::from_slice(&self.bytes).unwrap_or_default();
        if let Some(model) = &self.edits.model {
            body.insert("model".into(), Value::String(model.clone()));
        }
        if let Some(stream) = self.edits.stream {
            body.insert("stream".into(), Value::Bool(stream));
        }
        if let Some(include) = self.edits.include_usage {
            super::set_include_usage(&mut body, include);
        }
        body
    }

    /// The body for an upstream: the client's bytes with the edits spliced in (the bytes
    /// themselves, shared, when nothing changed).
    pub(super) fn to_bytes(&self) -> Bytes {
        let mut changes: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
        let mut added = Vec::new();
        if let Some(model) = &self.edits.model {
            if *model != self.sent.model {
                changes.push((self.spans.model.clone(), json(model)));
            }
        }
        if let Some(stream) = self.edits.stream.filter(|s| Some(*s) != self.sent.stream) {
            let value = if stream { &b"true"[..] } else { b"false" };
            match &self.spans.stream {
                Some(span) => changes.push((span.clone(), value.to_vec())),
                None => {
                    added.extend_from_slice(b",\"stream\":");
                    added.extend_from_slice(value);
                }
            }
        }
        if let Some(include) = self
            .edits
            .include_usage
            .filter(|i| Some(*i) != self.sent.include_usage)
        {
            // Other stream options stay; a null becomes an object.
            let mut options = self
                .spans
                .stream_options
                .as_ref()
                .and_then(|span| serde_json::from_slice(&self.bytes[span.clone()]).ok())
                .unwrap_or_default();
            super::set_include_usage_in(&mut options, include);
            let value = json(&options);
            match &self.spans.stream_options {
                Some(span) => changes.push((span.clone(), value)),
                None => {
                    added.extend_from_slice(b",\"stream_options\":");
                    added.extend_from_slice(&value);
                }
            }
        }
        if changes.is_empty() && added.is_empty() {
            return self.bytes.clone();
        }
        changes.sort_by_key(|(span, _)| span.start);
        let grown: usize = changes.iter().map(|(_, v)| v.len()).sum::<usize>() + added.len();
        let mut out = Vec::with_capacity(self.bytes.len() + grown);
        let mut at = 0;
        for (span, value) in &changes {
            out.extend_from_slice(&self.bytes[at..span.start]);
            out.extend_from_slice(value);
            at = span.end;
        }
        out.extend_from_slice(&self.bytes[at..self.spans.end]);
        out.extend_from_slice(&added);
        out.extend_from_slice(&self.bytes[self.spans.end..]);
        Bytes::from(out)
    }
}

/// A value as JSON (strings and maps of JSON values always serialise).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The top level of a body, read without building it.
#[derive(Default)]
struct Head<'a> {
    model: Option<&'a RawValue>,
    /// How many messages there are, each an object with a string `role`.
    messages: Option<usize>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    prompt_cache_key: Option<u64>,
    user: Option<u64>,
}

/// The top-level fields the gateway reads, in the order of `Head`'s fields.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "prompt_cache_key",
    "user",
];

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat completion request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'de>, A::Error> {
        let mut head = Head::default();
        // A field given twice is left to the full parse (the last one wins there).
        let mut seen = 0u8;
        while let Some(field) = map.next_key_seed(Key(FIELDS))? {
            let Some(field) = field else {
                map.next_value::<Skip>()?;
                continue;
            };
            if seen & (1 << field) != 0 {
                return Err(A::Error::custom("a field given twice"));
            }
            seen |= 1 << field;
            match field {
                0 => head.model = Some(map.next_value()?),
                1 => head.messages = Some(map.next_value::<Messages>()?.0),
                2 => head.stream = Some(map.next_value()?),
                3 => head.stream_options = Some(map.next_value()?),
                4 => head.max_tokens = map.next_value()?,
                5 => head.max_completion_tokens = map.next_value()?,
                6 => head.prompt_cache_key = map.next_value::<Option<Session>>()?.and_then(|s| s.0),
                _ => head.user = map.next_value::<Option<Session>>()?.and_then(|s| s.0),
            }
        }
        Ok(head)
    }
}

/// A key of an object: its index among the names the reader looks for, if it is one. Read
/// without copying, escaped or not.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// The value an object gives the key `name` (the last, if it is given more than once) and
/// how many times it is given; the other fields are checked and skipped.
fn one_field<'de, T: serde::Deserialize<'de>, A: MapAccess<'de>>(
    mut map: A,
    name: &'static [&'static str; 1],
) -> Result<(Option<T>, usize), A::Error> {
    let (mut value, mut times) = (None, 0);
    while let Some(field) = map.next_key_seed(Key(name))? {
        if field.is_some() {
            value = Some(map.next_value::<T>()?);
            times += 1;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok((value, times))
}

/// Any value, checked and skipped. Unlike serde's `IgnoredAny` it reads strings whole, so
/// that an escaped lone surrogate (which the full parse repairs) is not forwarded as is.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A string, checked and skipped.
struct AnyStr;

impl<'de> serde::Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Check;
        impl Visitor<'_> for Check {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(Check)
    }
}

/// A session name (`prompt_cache_key`, `user`), hashed; an empty one names none.
struct Session(Option<u64>);

impl<'de> serde::Deserialize<'de> for Session {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hash;
        impl Visitor<'_> for Hash {
            type Value = Session;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Session, E> {
                Ok(Session((!s.is_empty()).then(|| session_hash(s))))
            }
        }
        d.deserialize_str(Hash)
    }
}

/// `messages`, counted: each an object with a string `role`.
struct Messages(usize);

impl<'de> serde::Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut n = 0;
                while seq.next_element::<Role>()?.is_some() {
                    n += 1;
                }
                Ok(Messages(n))
            }
        }
        d.deserialize_seq(Count)
    }
}

/// A message, checked for one string `role` and otherwise skipped.
struct Role;

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = Role;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Role, A::Error> {
                let (_, roles) = one_field::<AnyStr, A>(map, &["role"])?;
                if roles == 1 {
                    Ok(Role)
                } else {
                    Err(A::Error::custom("a message without exactly one role"))
                }
            }
        }
        d.deserialize_map(Check)
    }
}

/// `stream_options`, read for `include_usage` alone.
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'de> serde::Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Read;
        impl<'de> Visitor<'de> for Read {
            type Value = StreamOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StreamOptions, A::Error> {
                // Not a boolean reads as no, as in the parsed body (the last one wins).
                let (value, _) = one_field::<Value, A>(map, &["include_usage"])?;
                let include_usage = value.and_then(|v| v.as_bool());
                Ok(StreamOptions { include_usage })
            }
        }
        d.deserialize_map(Read)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::ChatRequest;

    /// What the full parse makes of a body: the reference for the bytes path.
    fn parsed(body: &str) -> crate::Result<ChatRequest> {
        ChatRequest::parse(body.as_bytes())
    }

    fn read(body: &str) -> crate::Result<ChatRequest> {
        ChatRequest::from_bytes(bytes::Bytes::copy_from_slice(body.as_bytes()))
    }

    const TAKEN: &[&str] = &[
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        r#" { "messages" : [ {"content":[{"type":"text","text":"a\"}b"}], "role" : "user"} ], "model" : "fast/m" , "temperature":0.7 } "#,
        r#"{"model":"caf\u00e9","messages":[{"r\u006fle":"system","content":null},{"role":"user"}],"stream":true,"stream_options":{"include_usage":true,"x":[1]}}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"stream":null,"stream_options":null,"max_tokens":7,"max_completion_tokens":null}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"stream":false,"stream_options":{"include_usage":"yes"},"n":1.0,"e":1e2}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"user":"u1","prompt_cache_key":""}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"prompt_cache_key":"k","user":"u"}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"user":null,"max_completion_tokens":9,"max_tokens":3}"#,
    ];

    /// Left to the full parse: invalid, or unusual in a way the bytes path does not read.
    const LEFT: &[&str] = &[
        r#"{"model":"m","model":"n","messages":[{"role":"user"}]}"#,
        r#"{"model":"m","messages":[["user"]]}"#,
        r#"{"model":"m","messages":[{"role":"user","role":"system"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"user":{"id":1}}"#,
        r#"["m",[{"role":"user"}]]"#,
        r#"{"model":"m","messages":[]}"#,
        r#"{"model":" ","messages":[{"role":"user"}]}"#,
        r#"{"model":3,"messages":[{"role":"user"}]}"#,
        r#"{"model":null,"messages":[{"role":"user"}]}"#,
        r#"{"messages":[{"role":"user"}]}"#,
        r#"{"model":"m"}"#,
        r#"{"model":"m","messages":"hi"}"#,
        r#"{"model":"m","messages":[{"role":1}]}"#,
        r#"{"model":"m","messages":[{"content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"stream_options":[]}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
        r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":5.0}"#,
        r#"{"model":"m","messages":[{"role":"user"}]} x"#,
        r#"{"model":"m","messages":[{"role":"user"}]"#,
        "",
    ];

    #[test]
    fn the_bytes_path_takes_plain_requests_and_reads_them_as_the_full_parse_does() {
        for body in TAKEN {
            let fast = read(body).unwrap();
            assert!(fast.raw.is_some(), "left to the full parse: {body}");
            let full = parsed(body).unwrap();
            assert_eq!(fast, full, "{body}");
            assert_eq!(fast.model(), full.model(), "{body}");
            assert_eq!(fast.stream(), full.stream(), "{body}");
            assert_eq!(fast.stream_given(), full.stream_given(), "{body}");
            assert_eq!(fast.include_usage(), full.include_usage(), "{body}");
            assert_eq!(fast.session(), full.session(), "{body}");
            assert_eq!(fast.max_tokens(), full.max_tokens(), "{body}");
            assert_eq!(
                fast.max_completion_tokens(),
                full.max_completion_tokens(),
                "{body}"
            );
            // Unchanged, it goes upstream byte for byte.
            assert_eq!(&fast.to_bytes()[..], body.as_bytes());
        }
    }

    #[test]
    fn what_the_bytes_path_leaves_gets_the_full_parse_and_its_answer() {
        for body in LEFT {
            let fast = read(body);
            assert!(
                fast.as_ref().map_or(true, |r| r.raw.is_none()),
                "taken by the bytes path: {body}"
            );
            match (fast, parsed(body)) {
                (Ok(fast), Ok(full)) => assert_eq!(fast, full, "{body}"),
                (Err(fast), Err(full)) => {
                    assert_eq!(fast.message(), full.message(), "{body}");
                    assert_eq!(fast.param(), full.param(), "{body}");
                }
                (fast, full) => panic!("{body}: {fast:?} vs {full:?}"),
            }
        }
    }

    #[test]
    fn edits_are_spliced_into_the_clients_bytes() {
        for body in TAKEN {
            for (stream, usage) in [(true, true), (false, false), (true, false)] {
                let mut fast = read(body).unwrap();
                let mut full = parsed(body).unwrap();
                for r in [&mut fast, &mut full] {
                    r.set_model("upstream-\"name\"");
                    r.set_stream(stream);
                    r.set_include_usage(usage);
                }
                assert!(fast.raw.is_some());
                let spliced: serde_json::Value = serde_json::from_slice(&fast.to_bytes()).unwrap();
                let reserialised: serde_json::Value =
                    serde_json::from_slice(&full.to_bytes()).unwrap();
                assert_eq!(spliced, reserialised, "{body}");
                // The edits reach the parsed body too, made before or after it is parsed.
                assert_eq!(fast, full, "{body}");
                let mut late = read(body).unwrap();
                late.body();
                late.set_model("upstream-\"name\"");
                late.set_stream(stream);
                late.set_include_usage(usage);
                assert_eq!(late, full, "{body}");
                assert_eq!(late.to_bytes(), fast.to_bytes(), "{body}");
            }
        }
        // What the client wrote stays as written: spacing, number forms, field order.
        let mut r =
            read(r#"{ "model" : "a/b", "n":1.0, "e":1e2, "messages":[{"role":"user"}] }"#).unwrap();
        r.set_model("b");
        r.set_stream(true);
        r.set_include_usage(true);
        assert_eq!(
            std::str::from_utf8(&r.to_bytes()).unwrap(),
            r#"{ "model" : "b", "n":1.0, "e":1e2, "messages":[{"role":"user"}] ,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let mut r =
            read(r#"{"model":"m","messages":[{"role":"user"}],"stream_options":{"x":1}}"#).unwrap();
        r.set_include_usage(true);
        assert_eq!(
            r.get("stream_options"),
            Some(&json!({"x": 1, "include_usage": true}))
        );
        assert_eq!(
            &r.to_bytes()[..],
            br#"{"model":"m","messages":[{"role":"user"}],"stream_options":{"x":1,"include_usage":true}}"#
        );
    }

    #[test]
    fn an_edit_of_the_parsed_body_ends_the_bytes_path() {
        let mut r = read(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":900}"#).unwrap();
        r.set_model("n");
        r.body_mut().insert("max_tokens".into(), json!(100));
        assert!(r.raw.is_none());
        assert_eq!(r.max_tokens(), Some(100));
        assert_eq!(r.model(), "n");
        assert_eq!(
            &r.to_bytes()[..],
            br#"{"model":"n","messages":[{"role":"user"}],"max_tokens":100}"#
        );
    }

    mod fuzz {
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::{parsed, read};

        /// Values of every JSON type, the odd ones a client may send included.
        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                (-3i64..1000).prop_map(Value::from),
                Just(json!(2.5)),
                Just(json!(7.0)),
                Just(json!("")),
                Just(json!(" ")),
                "[a-z/ \"\\\\é😀]{0,8}".prop_map(Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(3, 12, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                    prop::collection::vec(("[a-z_]{1,6}", inner), 0..3)
                        .prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        fn message() -> impl Strategy<Value = Value> {
            prop_oneof![
                12 => (prop_oneof![8 => Just(json!("user")), 4 => Just(json!("system")), 1 => scalar()], value())
                    .prop_map(|(role, content)| json!({"role": role, "content": content})),
                1 => value(),
            ]
        }

        /// A request body: mostly well-formed, every tracked field sometimes absent, of the
        /// wrong type, or null.
        fn body() -> impl Strategy<Value = Map<String, Value>> {
            let field = |name: &'static str, good: BoxedStrategy<Value>| {
                prop_oneof![12 => good.prop_map(Some), 1 => value().prop_map(Some), 2 => Just(None)]
                    .prop_map(move |v| (name, v))
            };
            (
                field("model", "[a-z/]{1,8}".prop_map(Value::from).boxed()),
                field(
                    "messages",
                    prop::collection::vec(message(), 1..3)
                        .prop_map(Value::from)
                        .boxed(),
                ),
                field("stream", any::<bool>().prop_map(Value::from).boxed()),
                field(
                    "stream_options",
                    (any::<bool>(), value())
                        .prop_map(|(u, x)| json!({"include_usage": u, "x": x}))
                        .boxed(),
                ),
                field("max_tokens", (0u64..100).prop_map(Value::from).boxed()),
                field("user", "[a-z]{0,3}".prop_map(Value::from).boxed()),
                field(
                    "prompt_cache_key",
                    "[a-z]{0,3}".prop_map(Value::from).boxed(),
                ),
                value(),
            )
                .prop_map(|(a, b, c, d, e, f, g, other)| {
                    let mut body = Map::new();
                    for (name, v) in [a, b, c, d, e, f, g] {
                        if let Some(v) = v {
                            body.insert(name.into(), v);
                        }
                    }
                    body.insert("other".into(), other);
                    body
                })
        }

        /// The body as text, sometimes with a field repeated, a lone surrogate in a string,
        /// or cut short.
        fn text() -> impl Strategy<Value = String> {
            (body(), 0..6u8).prop_map(|(body, twist)| {
                let text = Value::Object(body).to_string();
                match twist {
                    0 => format!("{},\"model\":\"again\"}}", &text[..text.len() - 1]),
                    1 => text.replacen("\"content\":\"", "\"content\":\"\\ud800", 1),
                    2 => {
                        let half = (0..=text.len() / 2)
                            .rev()
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(0);
                        text[..half].to_owned()
                    }
                    _ => text,
                }
            })
        }

        /// Fails on a body that names a field the gateway edits twice.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Once {
            model: serde::de::IgnoredAny,
            stream: Option<serde::de::IgnoredAny>,
            stream_options: Option<serde::de::IgnoredAny>,
        }

        proptest! {
            #[test]
            fn reading_the_bytes_agrees_with_the_full_parse(
                text in text(),
                model in "[a-z\"]{1,5}",
                stream in any::<Option<bool>>(),
                usage in any::<Option<bool>>(),
            ) {
                match (read(&text), parsed(&text)) {
                    (Ok(mut fast), Ok(mut full)) => {
                        prop_assert_eq!(&fast, &full);
                        prop_assert_eq!(fast.session(), full.session());
                        prop_assert_eq!(fast.include_usage(), full.include_usage());
                        prop_assert_eq!(fast.max_tokens(), full.max_tokens());
                        for r in [&mut fast, &mut full] {
                            r.set_model(&model);
                            if let Some(s) = stream {
                                r.set_stream(s);
                            }
                            if let Some(u) = usage {
                                r.set_include_usage(u);
                            }
                        }
                        // Upstreams differ on which of two equal keys wins: never send two.
                        prop_assert!(serde_json::from_slice::<Once>(&fast.to_bytes()).is_ok());
                        let spliced: Value = serde_json::from_slice(&fast.to_bytes()).unwrap();
                        let rebuilt: Value = serde_json::from_slice(&full.to_bytes()).unwrap();
                        prop_assert_eq!(spliced, rebuilt);
                        prop_assert_eq!(fast.stream(), full.stream());
                        prop_assert_eq!(fast.include_usage(), full.include_usage());
                        prop_assert_eq!(&fast, &full);
                    }
                    (Err(fast), Err(full)) => {
                        prop_assert_eq!(fast.message(), full.message());
                        prop_assert_eq!(fast.param(), full.param());
                    }
                    (fast, full) => prop_assert!(false, "{text}: {fast:?} vs {full:?}"),
                }
            }
        }
    }
}
