//! Token estimates with OpenAI's tokenizers, for when an upstream reports no usage.
//!
//! The vocabularies load lazily, the first time an estimate needs them, and are released
//! again after a while without estimates ([`release_idle`]): most deployments never need them,
//! and they hold tens of megabytes. Run estimates off the async threads (loading takes a few
//! hundred milliseconds).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llm_bridge_core::Message;
use tiktoken_rs::CoreBPE;

/// Builds a vocabulary.
type Loader = fn() -> Result<CoreBPE, String>;

struct Vocabularies {
    o200k: Option<Arc<CoreBPE>>,
    cl100k: Option<Arc<CoreBPE>>,
    last_used: Option<Instant>,
}

static VOCABULARIES: Mutex<Vocabularies> = Mutex::new(Vocabularies {
    o200k: None,
    cl100k: None,
    last_used: None,
});

/// What the vocabularies just did to the process's memory (see [`on_vocabulary_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabularyMemory {
    /// A vocabulary was built, on this thread, from text embedded in the executable: the
    /// text's pages were read once and are not needed again.
    Loaded,
    /// The vocabularies were dropped, on this thread, whose allocator now holds their memory
    /// free.
    Released,
}

static ON_MEMORY: OnceLock<fn(VocabularyMemory)> = OnceLock::new();

/// Sets what runs after a vocabulary is loaded or the vocabularies are released: the binary
/// hands the memory back to the system there (this crate has no `unsafe`).
pub fn on_vocabulary_memory(hook: fn(VocabularyMemory)) {
    let _ = ON_MEMORY.set(hook);
}

fn tell(what: VocabularyMemory) {
    if let Some(hook) = ON_MEMORY.get() {
        hook(what);
    }
}

/// Drops the loaded vocabularies when no estimate used them for `idle`.
pub fn release_idle(idle: Duration) {
    let mut v = VOCABULARIES.lock().unwrap_or_else(|e| e.into_inner());
    if v.last_used.is_some_and(|t| t.elapsed() >= idle) {
        v.o200k = None;
        v.cl100k = None;
        v.last_used = None;
        drop(v);
        tell(VocabularyMemory::Released);
    }
}

/// Which vocabulary a model's text is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-5, o-series — and the estimate for every non-OpenAI model.
    O200k,
    /// GPT-4, GPT-4 Turbo, GPT-3.5 Turbo.
    Cl100k,
}

impl Encoding {
    /// The vocabulary for an upstream model name.
    pub fn for_model(model: &str) -> Encoding {
        let m = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let cl100k = m.starts_with("gpt-3.5")
            || m.starts_with("gpt-35")
            || (m.starts_with("gpt-4")
                && !m.starts_with("gpt-4o")
                && !m.starts_with("gpt-4.")
                && !m.starts_with("gpt-4-o"))
            || m.starts_with("text-embedding-3")
            || m.starts_with("text-embedding-ada");
        if cl100k {
            Encoding::Cl100k
        } else {
            Encoding::O200k
        }
    }

    fn bpe(self) -> Option<Arc<CoreBPE>> {
        let mut guard = VOCABULARIES.lock().unwrap_or_else(|e| e.into_inner());
        guard.last_used = Some(Instant::now());
        let v = &mut *guard;
        let (slot, load): (&mut Option<Arc<CoreBPE>>, Loader) = match self {
            Encoding::O200k => (&mut v.o200k, anyhow_free::o200k),
            Encoding::Cl100k => (&mut v.cl100k, anyhow_free::cl100k),
        };
        let loading = slot.is_none();
        if loading {
            match load() {
                Ok(bpe) => *slot = Some(Arc::new(bpe)),
                Err(e) => {
                    tracing::error!(error = %e, "token vocabulary could not be loaded: estimates are 0");
                    return None;
                }
            }
        }
        let bpe = slot.clone();
        drop(guard);
        if loading {
            tell(VocabularyMemory::Loaded);
        }
        bpe
    }

    /// Tokens in a text. Texts longer than [`SAMPLE_BYTES`] are estimated from their first
    /// part: byte-pair encoding is quadratic on long runs without spaces, and an estimate of a
    /// huge text needs no token-exact count.
    pub fn count(self, text: &str) -> u64 {
        self.count_with_extra(text, 0)
    }

    /// Tokens in `text` followed by `extra_bytes` more bytes of the same kind of text that
    /// were not kept (see [`SAMPLE_BYTES`]).
    pub fn count_with_extra(self, text: &str, extra_bytes: u64) -> u64 {
        if text.is_empty() {
            return 0;
        }
        let Some(bpe) = self.bpe() else {
            return 0;
        };
        let sample = prefix(text, SAMPLE_BYTES);
        let counted = bpe.count_ordinary(sample) as u64;
        let total = text.len() as u64 + extra_bytes;
        if total == sample.len() as u64 {
            return counted;
        }
        (counted as f64 * total as f64 / sample.len().max(1) as f64).round() as u64
    }
}

/// The vocabularies' constructors, with their errors as text.
mod anyhow_free {
    use tiktoken_rs::CoreBPE;

    pub(super) type Result<T> = std::result::Result<T, String>;

    pub(super) fn o200k() -> Result<CoreBPE> {
        tiktoken_rs::o200k_base().map_err(|e| e.to_string())
    }

    pub(super) fn cl100k() -> Result<CoreBPE> {
        tiktoken_rs::cl100k_base().map_err(|e| e.to_string())
    }
}

/// How much text is counted exactly; beyond it, counts are extrapolated.
pub const SAMPLE_BYTES: usize = 256 * 1024;

/// The longest prefix of `text` of at most `max` bytes, on a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Framing tokens per message and for priming the reply, as OpenAI's cookbook counts them for
/// current chat models.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
const PER_TOOL_CALL: u64 = 1;

/// Prompt tokens of a chat request's messages (plus its tool definitions, counted as their
/// JSON text).
pub fn prompt_tokens(
    encoding: Encoding,
    messages: &[Message],
    tools: Option<&serde_json::Value>,
) -> u64 {
    let mut total = REPLY_PRIMING;
    for m in messages {
        total += PER_MESSAGE + encoding.count(&m.role);
        let mut text = String::new();
        match &m.content {
            Some(llm_bridge_core::Content::Text(t)) => text.push_str(t),
            Some(llm_bridge_core::Content::Parts(parts)) => {
                for p in parts {
                    if let Some(t) = &p.text {
                        text.push_str(t);
                    }
                }
            }
            None => {}
        }
        total += encoding.count(&text);
        if let Some(name) = &m.name {
            total += PER_NAME + encoding.count(name);
        }
        for call in m.tool_calls.iter().flatten() {
            total += PER_TOOL_CALL
                + encoding.count(&call.function.name)
                + encoding.count(&call.function.arguments);
        }
    }
    if let Some(tools) = tools.filter(|t| !t.is_null()) {
        total += encoding.count(&tools.to_string());
    }
    total
}

/// Prompt tokens of a raw request body (`{"messages": […], "tools": […]}`); 0 when it
/// cannot be read.
pub fn prompt_tokens_of_body(encoding: Encoding, body: &[u8]) -> u64 {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let messages: Vec<Message> = value
        .get("messages")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| Message::deserialize_value(m).ok())
                .collect()
        })
        .unwrap_or_default();
    prompt_tokens(encoding, &messages, value.get("tools"))
}

/// Tokens of an embeddings request's `input` (`{"input": "…" | ["…", …] | [1, 2, …] | [[1, 2], …]}`):
/// texts counted with `encoding`, token arrays by their length; 0 when it cannot be read.
pub fn input_tokens_of_body(encoding: Encoding, body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Tokens(Vec<u64>),
        Token(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input {
        One(String),
        Many(Vec<Item>),
    }
    #[derive(serde::Deserialize)]
    struct Request {
        input: Option<Input>,
    }
    let Ok(Request { input: Some(input) }) = serde_json::from_slice::<Request>(body) else {
        return 0;
    };
    match input {
        Input::One(text) => encoding.count(&text),
        Input::Many(items) => items
            .iter()
            .map(|item| match item {
                Item::Text(text) => encoding.count(text),
                Item::Token(_) => 1,
                Item::Tokens(tokens) => tokens.len() as u64,
            })
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LOADED: AtomicUsize = AtomicUsize::new(0);
    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    fn note(what: VocabularyMemory) {
        match what {
            VocabularyMemory::Loaded => LOADED.fetch_add(1, Ordering::SeqCst),
            VocabularyMemory::Released => RELEASED.fetch_add(1, Ordering::SeqCst),
        };
    }

    #[test]
    fn the_binary_hears_of_each_load_and_release() {
        on_vocabulary_memory(note);
        // Other tests load and count too: after this release, either this test's count loads
        // the vocabulary or another test did, and either is heard.
        release_idle(Duration::ZERO);
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert!(LOADED.load(Ordering::SeqCst) > 0, "no load heard");
        release_idle(Duration::ZERO);
        assert!(RELEASED.load(Ordering::SeqCst) > 0, "no release heard");
    }

    #[test]
    fn embedding_inputs_are_counted_as_texts_or_tokens() {
        let e = Encoding::O200k;
        assert_eq!(input_tokens_of_body(e, br#"{"input":"hello world"}"#), 2);
        assert_eq!(
            input_tokens_of_body(e, br#"{"input":["hello world","hello"]}"#),
            3
        );
        assert_eq!(input_tokens_of_body(e, br#"{"input":[1,2,3]}"#), 3);
        assert_eq!(input_tokens_of_body(e, br#"{"input":[[1,2],[3]]}"#), 3);
        assert_eq!(input_tokens_of_body(e, br#"{"model":"m"}"#), 0);
    }

    #[test]
    fn vocabulary_by_model() {
        assert_eq!(Encoding::for_model("gpt-4o-2024-08-06"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4.1-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model("o3-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4"), Encoding::Cl100k);
        assert_eq!(Encoding::for_model("gpt-4-turbo"), Encoding::Cl100k);
        assert_eq!(Encoding::for_model("gpt-3.5-turbo"), Encoding::Cl100k);
        assert_eq!(Encoding::for_model("deepseek-chat"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gemini-2.5-flash"), Encoding::O200k);
        assert_eq!(Encoding::for_model("closeai/gpt-4"), Encoding::Cl100k);
    }

    #[test]
    fn huge_texts_are_extrapolated_quickly() {
        let words = "hello world ".repeat(100_000);
        let exact = 200_000;
        let estimate = Encoding::O200k.count(&words);
        assert!(estimate.abs_diff(exact) < exact / 50, "{estimate}");
        let started = std::time::Instant::now();
        let run = "x".repeat(8 << 20);
        assert!(Encoding::O200k.count(&run) > 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(Encoding::O200k.count_with_extra("hello world", 11), 4);
    }

    #[test]
    fn known_token_counts() {
        // tiktoken's reference values.
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::Cl100k.count(""), 0);
        // Special-token text in user content is ordinary text, never a control token.
        assert!(Encoding::O200k.count("<|endoftext|>") > 1);
    }

    /// The example of OpenAI's cookbook "How to count tokens with tiktoken": the API reported
    /// 129 prompt tokens for gpt-3.5-turbo-0613 and gpt-4-0613 (cl100k).
    #[test]
    fn cookbook_example_messages() {
        let messages: Vec<Message> = serde_json::from_value(json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]))
        .unwrap();
        assert_eq!(prompt_tokens(Encoding::Cl100k, &messages, None), 129);
    }
}
