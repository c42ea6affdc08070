//! The common `chat.completion.chunk`, read in one pass over its bytes: what
//! [`inspect`](crate::inspect) keeps of it (usage, whether it has choices, the text of its
//! deltas) and nothing else. serde's reading of a chunk took 41 % of a streamed answer's
//! instructions in the gateway (callgrind, 20-chunk streams at concurrency 1): most of it
//! parsing keys and skipping values the gateway never looks at. The scan reads the bench
//! mock's chunk in 335 ns against serde's 760 (release build, a million times each).
//!
//! The scan knows a strict subset of JSON: anything outside it (an escaped key, a `\u` escape
//! in a skipped string, a `message`, a value of an unexpected type, deep nesting, a duplicate
//! key, bytes that are not JSON at all) gives `None`, and serde reads the chunk instead. So
//! every chunk is read as serde reads it, errors included (a property test checks it).

use std::borrow::Cow;

use crate::response::{Inspection, WireToolCall, WireUsage, push_tool_text};

/// The bytes a string holds as they are: all but `"`, `\\` and control characters.
static PLAIN: [bool; 256] = {
    let mut plain = [true; 256];
    let mut byte = 0;
    while byte < 0x20 {
        plain[byte] = false;
        byte += 1;
    }
    plain[b'"' as usize] = false;
    plain[b'\\' as usize] = false;
    plain
};

/// Where the first byte that is not [`PLAIN`] is, eight bytes at a time: a byte at a time
/// took ~20 instructions a byte (callgrind), most of a chunk's scan.
fn special_at(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (`quote`, `backslash`) or below 0x20
        // (`w`); a borrow can set it above one of those too, so only the lowest counts.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    rest.iter()
        .position(|&b| !PLAIN[usize::from(b)])
        .map(|i| at + i)
}

/// Deepest nesting a skipped value may have before the chunk is left to serde (whose own
/// limit, 128 levels, is then never the one that decides).
const MAX_DEPTH: usize = 64;

/// [`Inspection`] of `json` and its delta text appended to `text`, or `None` (and `text` as
/// it was) when serde must read it.
pub(crate) fn scan(json: &[u8], text: Option<&mut String>) -> Option<Inspection> {
    let mut scanner = Scanner { json, at: 0 };
    let mut found = Found::default();
    let read = scanner.chunk(&mut found).and_then(|()| scanner.end());
    let usage = match (read, found.usage) {
        (None, _) => return None,
        (Some(()), None) => None,
        (Some(()), Some((from, to))) => {
            serde_json::from_slice::<Option<WireUsage>>(&json[from..to]).ok()?
        }
    };
    if let Some(out) = text {
        let before = out.len();
        if append_text(json, &found.deltas, out).is_none() {
            out.truncate(before);
            return None;
        }
    }
    Some(Inspection {
        usage: usage.map(Into::into),
        has_choices: found.choices > 0,
    })
}

/// A string token's place: from its opening quote to after its closing one, and whether it
/// has escapes to decode.
#[derive(Clone, Copy)]
struct Token {
    from: usize,
    to: usize,
    escaped: bool,
}

/// What one choice's `delta` holds: its strings by place, its tool calls read by serde.
#[derive(Default)]
struct Delta<'a> {
    content: Option<Token>,
    reasoning_content: Option<Token>,
    refusal: Option<Token>,
    tool_calls: Vec<WireToolCall<'a>>,
    /// The keys met, one bit each (serde rejects a duplicate field, even a `null` one).
    seen: u8,
}

#[derive(Default)]
struct Found<'a> {
    /// How many choices the chunk has.
    choices: usize,
    /// Each choice's delta, in order (choices without one are left out: they add no text).
    deltas: Vec<Delta<'a>>,
    /// The `usage` value, from its first byte to after its last.
    usage: Option<(usize, usize)>,
}

/// Appends the deltas' text in [`inspect`](crate::inspect)'s order: content, reasoning,
/// refusal, then tool names and arguments.
fn append_text(json: &[u8], deltas: &[Delta<'_>], out: &mut String) -> Option<()> {
    for d in deltas {
        for token in [d.content, d.reasoning_content, d.refusal]
            .into_iter()
            .flatten()
        {
            out.push_str(&string(json, token)?);
        }
        push_tool_text(&d.tool_calls, out);
    }
    Some(())
}

/// A string token's text: borrowed when it has no escapes, else decoded by serde.
fn string(json: &[u8], t: Token) -> Option<Cow<'_, str>> {
    if t.escaped {
        return serde_json::from_slice::<Cow<'_, str>>(&json[t.from..t.to]).ok();
    }
    std::str::from_utf8(&json[t.from + 1..t.to - 1])
        .ok()
        .map(Cow::Borrowed)
}

struct Scanner<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, consumed if it is `byte`.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Only whitespace left.
    fn end(&mut self) -> Option<()> {
        self.skip_space();
        (self.at == self.json.len()).then_some(())
    }

    /// The members of an object whose `{` is next, each handed to `member` with its key
    /// (ASCII without escapes, else `None`); `member` reads the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            if key.escaped {
                return None;
            }
            let (from, to) = (key.from + 1, key.to - 1);
            if !self.json[from..to].is_ascii() {
                return None;
            }
            self.expect(b':')?;
            let json = self.json;
            member(self, &json[from..to])?;
            if self.eat(b'}') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// A `null`, consumed: whether it was one.
    fn null(&mut self) -> bool {
        self.skip_space();
        if self.json[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }

    fn chunk(&mut self, found: &mut Found<'a>) -> Option<()> {
        let (mut choices_seen, mut usage_seen) = (false, false);
        self.object(|s, key| match key {
            b"choices" => {
                once(&mut choices_seen)?;
                s.choices(found)
            }
            b"usage" => {
                once(&mut usage_seen)?;
                s.skip_space();
                let from = s.at;
                s.value(0)?;
                found.usage = Some((from, s.at));
                Some(())
            }
            _ => s.value(0),
        })
    }

    fn choices(&mut self, found: &mut Found<'a>) -> Option<()> {
        if self.null() {
            return Some(());
        }
        self.expect(b'[')?;
        if self.eat(b']') {
            return Some(());
        }
        loop {
            found.choices += 1;
            let mut delta = None;
            self.skip_space();
            if self.peek() != Some(b'{') {
                return None;
            }
            self.object(|s, key| match key {
                b"delta" => {
                    if delta.is_some() {
                        return None;
                    }
                    delta = Some(s.delta()?);
                    Some(())
                }
                // A whole `chat.completion`'s choice: serde's to read.
                b"message" => None,
                _ => s.value(0),
            })?;
            found.deltas.extend(delta.flatten());
            if self.eat(b']') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// A choice's `delta`: `None` inside when it is `null`.
    fn delta(&mut self) -> Option<Option<Delta<'a>>> {
        if self.null() {
            return Some(None);
        }
        self.skip_space();
        if self.peek() != Some(b'{') {
            return None;
        }
        let mut d = Delta::default();
        self.object(|s, key| {
            let (field, bit) = match key {
                b"content" => (&mut d.content, 1),
                b"reasoning_content" => (&mut d.reasoning_content, 2),
                b"refusal" => (&mut d.refusal, 4),
                b"tool_calls" => {
                    once_in(&mut d.seen, 8)?;
                    if s.null() {
                        return Some(());
                    }
                    s.skip_space();
                    if s.peek() != Some(b'[') {
                        return None;
                    }
                    let from = s.at;
                    s.value(0)?;
                    let json: &'a [u8] = s.json;
                    d.tool_calls = serde_json::from_slice(&json[from..s.at]).ok()?;
                    return Some(());
                }
                _ => return s.value(0),
            };
            once_in(&mut d.seen, bit)?;
            if !s.null() {
                s.skip_space();
                *field = Some(s.string()?);
            }
            Some(())
        })?;
        Some(Some(d))
    }

    /// A string whose `"` is next: its token. Control characters and `\u` escapes are left
    /// to serde; so are bytes that are not UTF-8.
    fn string(&mut self) -> Option<Token> {
        let json = self.json;
        let from = self.at;
        if json.get(from) != Some(&b'"') {
            return None;
        }
        let mut at = from + 1;
        let mut escaped = false;
        loop {
            at += special_at(json.get(at..)?)?;
            match json[at] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match json.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        let inside = &json[from + 1..at];
        if !inside.is_ascii() && std::str::from_utf8(inside).is_err() {
            return None;
        }
        self.at = at + 1;
        Some(Token {
            from,
            to: self.at,
            escaped,
        })
    }

    /// Skips one JSON value, checking it as serde would.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.value(depth + 1)),
            b'[' => {
                self.at += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    if self.eat(b']') {
                        return Some(());
                    }
                    self.expect(b',')?;
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                for word in [&b"null"[..], b"true", b"false"] {
                    if self.json[self.at..].starts_with(word) {
                        self.at += word.len();
                        return Some(());
                    }
                }
                None
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        // What follows must end the value (`01` is then left to serde: the container wants
        // a `,` or its end after the `0`).
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let from = self.at;
        self.digits();
        (self.at > from).then_some(())
    }
}

/// Marks a key met; `None` the second time (serde rejects a duplicate field).
fn once(seen: &mut bool) -> Option<()> {
    if std::mem::replace(seen, true) {
        None
    } else {
        Some(())
    }
}

/// [`once`] for a key that is one bit of `seen`.
fn once_in(seen: &mut u8, bit: u8) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::response::inspect_by_serde;

    /// Checks that the scan reads `json` as serde does wherever it answers, with and without
    /// text, and leaves the text as it was where it does not; whether it answered.
    fn agree(json: &[u8]) -> bool {
        let shown = String::from_utf8_lossy(json);
        let mut fast = String::from("earlier text ");
        let scanned = scan(json, Some(&mut fast));
        let mut slow = String::from("earlier text ");
        let read = inspect_by_serde(json, Some(&mut slow)).ok();
        match scanned {
            Some(seen) => {
                assert_eq!(Some(seen), read, "{shown}");
                assert_eq!(fast, slow, "{shown}");
            }
            None => assert_eq!(fast, "earlier text ", "{shown}"),
        }
        let bare = scan(json, None);
        assert_eq!(bare.is_some(), scanned.is_some(), "{shown}");
        if bare.is_some() {
            assert_eq!(bare, inspect_by_serde(json, None).ok(), "{shown}");
        }
        scanned.is_some()
    }

    fn chunks(sse: &str) -> impl Iterator<Item = &str> {
        sse.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
    }

    #[test]
    fn every_recorded_chunk_is_read_by_the_scan_as_serde_reads_it() {
        for sse in [
            include_str!("../tests/fixtures/test_parse_multiple_pydantic_tools.sse"),
            include_str!("../tests/fixtures/test_parse_pydantic_model_multiple_choices.sse"),
            include_str!("../tests/fixtures/test_parse_pydantic_model_refusal.sse"),
            include_str!("../tests/fixtures/test_content_logprobs_events.sse"),
        ] {
            let all: Vec<&str> = chunks(sse).collect();
            assert!(all.len() > 3);
            for chunk in all {
                assert!(agree(chunk.as_bytes()), "left to serde: {chunk}");
            }
        }
    }

    #[test]
    fn text_usage_and_choices_as_serde_reads_them() {
        let chunk = br#" {"id":"c","choices":[{"index":0,"delta":{"refusal":"no","content":"a\"b\\n\n","reasoning_content":"why"},"finish_reason":null},{"delta":null},{"delta":{"tool_calls":[{"function":{"arguments":"{\"x\":1}","name":"f"}}]}}],"usage":{"prompt_tokens":3,"completion_tokens":5}} "#;
        let mut text = String::new();
        let seen = scan(chunk, Some(&mut text)).expect("read by the scan");
        assert_eq!(text, "a\"b\\n\nwhynof{\"x\":1}");
        assert!(seen.has_choices);
        assert_eq!(seen.usage.map(|u| u.total_tokens), Some(8));
        assert!(agree(chunk));
        let usage_only =
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let seen = scan(usage_only, None).expect("read by the scan");
        assert!(!seen.has_choices);
        assert!(agree(usage_only));
    }

    #[test]
    fn what_the_scan_leaves_to_serde() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        for json in [
            r#"{"choices":[{"message":{"content":"x"}}]}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":null,"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{},"delta":{}}]}"#,
            r#"{"usage":null,"usage":null}"#,
            r#"{"cho\u0069ces":[]}"#,
            r#"{"id":"\u00e9"}"#,
            "{\"id\":\"a\u{1}\"}",
            r#"{"choices":[{"delta":{"content":1}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":5}]}}]}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":[[]]}"#,
            r#"{"usage":{"prompt_tokens":-1}}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a":nul}"#,
            r#"{"a":1} x"#,
            r#"[]"#,
            "",
            "   ",
            &deep,
        ] {
            assert!(scan(json.as_bytes(), None).is_none(), "{json}");
            agree(json.as_bytes());
        }
        // Bytes that are not UTF-8, in a skipped string and in text.
        assert!(scan(b"{\"id\":\"\xff\"}", None).is_none());
        assert!(scan(b"{\"choices\":[{\"delta\":{\"content\":\"\xc3\"}}]}", None).is_none());
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 \"\\\\/é✓\n\t]{0,8}"
    }

    /// Any JSON value, a little nested.
    fn noise() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "\\PC{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A string or `null`; now and then something else.
    fn text_field(plain: bool) -> BoxedStrategy<Value> {
        if plain {
            prop_oneof![Just(Value::Null), text().prop_map(Value::String)].boxed()
        } else {
            prop_oneof![
                3 => Just(Value::Null),
                6 => text().prop_map(Value::String),
                1 => noise(),
            ]
            .boxed()
        }
    }

    fn object(members: Vec<(&'static str, Option<Value>)>) -> Value {
        Value::Object(
            members
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect(),
        )
    }

    /// A chunk as upstreams send them; `plain`: nothing the scan leaves to serde.
    fn chunk(plain: bool) -> impl Strategy<Value = Value> {
        let call = (
            prop::option::of(text_field(plain)),
            prop::option::of(text_field(plain)),
        )
            .prop_map(|(name, arguments)| {
                json!({"index": 0, "function": object(vec![("name", name), ("arguments", arguments)])})
            });
        let delta = (
            prop::option::of(text_field(plain)),
            prop::option::of(text_field(plain)),
            prop::option::of(text_field(plain)),
            prop::option::of(prop::collection::vec(call, 0..3).prop_map(Value::Array)),
        )
            .prop_map(|(content, reasoning, refusal, calls)| {
                object(vec![
                    ("role", Some(json!("assistant"))),
                    ("content", content),
                    ("reasoning_content", reasoning),
                    ("refusal", refusal),
                    ("tool_calls", calls),
                ])
            });
        let delta = if plain {
            prop_oneof![4 => delta, 1 => Just(Value::Null)].boxed()
        } else {
            prop_oneof![4 => delta, 1 => Just(Value::Null), 1 => noise()].boxed()
        };
        let choice = (delta, noise()).prop_map(|(delta, logprobs)| {
            json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": null})
        });
        let usage = (0u32..1000, 0u32..1000, prop::option::of(0u32..100)).prop_map(|(p, c, k)| {
            json!({"prompt_tokens": p, "completion_tokens": c,
                   "prompt_tokens_details": object(vec![("cached_tokens", k.map(Value::from))])})
        });
        (
            prop::collection::vec(choice, 0..3),
            prop::option::of(usage),
            noise(),
        )
            .prop_map(|(choices, usage, extra)| {
                object(vec![
                    ("id", Some(json!("chatcmpl-1"))),
                    ("object", Some(json!("chat.completion.chunk"))),
                    ("created", Some(json!(1_727_346_180))),
                    ("choices", Some(Value::Array(choices))),
                    ("usage", usage),
                    ("extra", Some(extra)),
                ])
            })
    }

    /// `bytes` with each edit applied: (where, what: 0 insert, 1 replace, 2 remove, byte).
    fn edited(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, what, byte) in edits {
            let at = at % (bytes.len() + 1);
            match what % 3 {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => bytes[at] = byte,
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    }

    proptest! {
        #[test]
        fn plain_chunks_are_read_by_the_scan_as_serde_reads_them(chunk in chunk(true)) {
            // `noise` may hold strings serde writes with `\u` escapes: those go to serde.
            let json = serde_json::to_vec(&chunk).unwrap();
            let answered = agree(&json);
            let escaped = json.windows(2).any(|w| w == b"\\u");
            prop_assert!(answered || escaped, "{}", String::from_utf8_lossy(&json));
        }

        #[test]
        fn any_chunk_is_read_as_serde_reads_it(chunk in chunk(false)) {
            agree(&serde_json::to_vec(&chunk).unwrap());
        }

        #[test]
        fn edited_chunks_are_read_as_serde_reads_them(
            chunk in chunk(false),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![
                any::<u8>(), Just(b'"'), Just(b','), Just(b'}'), Just(b']'), Just(b'\\'),
                Just(b'0'), Just(b' '), Just(b'n'),
            ]), 1..4),
        ) {
            agree(&edited(serde_json::to_vec(&chunk).unwrap(), &edits));
        }

        #[test]
        fn the_first_special_byte_is_found_in_any_bytes(bytes in prop::collection::vec(prop_oneof![
            4 => 0x20u8..0x7f, 2 => any::<u8>(), 1 => Just(b'"'), 1 => Just(b'\\'),
        ], 0..40)) {
            let naive = bytes.iter().position(|&b| !PLAIN[usize::from(b)]);
            prop_assert_eq!(special_at(&bytes), naive);
        }

        #[test]
        fn no_bytes_panic_the_scan(bytes in prop::collection::vec(prop_oneof![
            any::<u8>(), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b':'),
            Just(b','), Just(b'\\'), Just(b'1'),
        ], 0..64)) {
            agree(&bytes);
        }
    }
}
