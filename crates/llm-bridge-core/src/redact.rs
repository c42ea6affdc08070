//! Scrubbing secrets out of text that came from elsewhere.
//!
//! Upstreams sometimes echo what they were sent: a 400 that quotes the `Authorization`
//! header, a proxy error that repeats its URL. Such text reaches clients and logs only after
//! [`redact`] has replaced what must stay secret with `[redacted]`.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: a one-letter "key" would blank out text.
const MIN_SECRET_LEN: usize = 6;

/// `text` with every occurrence of `secrets`, every `Bearer <token>`, every credential in a
/// URL (`scheme://user:pass@`) and every `key=` query value replaced by `[redacted]`.
/// Borrows when there was nothing to replace (the common case).
pub fn redact<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets {
        if secret.len() >= MIN_SECRET_LEN && out.contains(secret) {
            out = Cow::Owned(out.replace(secret, REDACTED));
        }
    }
    if let Some(clean) = redact_after(&out, "bearer ", is_token_byte) {
        out = Cow::Owned(clean);
    }
    if let Some(clean) = redact_url_credentials(&out) {
        out = Cow::Owned(clean);
    }
    for marker in ["?key=", "&key="] {
        if let Some(clean) = redact_after(&out, marker, is_token_byte) {
            out = Cow::Owned(clean);
        }
    }
    out
}

fn is_token_byte(b: u8) -> bool {
    !(b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b',' | b';' | b'&' | b'\\'))
}

/// Replaces the run of `keep` bytes after each (ASCII case-insensitive) `marker`.
fn redact_after(text: &str, marker: &str, keep: fn(u8) -> bool) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = lower[from..].find(marker) {
        let start = from + at + marker.len();
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| !keep(*b))
                .unwrap_or(bytes.len() - start);
        from = end.max(start + 1).min(text.len());
        if end == start || &text[start..end] == REDACTED {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        if from >= text.len() {
            break;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// `scheme://user:pass@host` → `scheme://[redacted]@host`.
fn redact_url_credentials(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let start = from + at + 3;
        // The authority ends at the first '/', whitespace or quote; credentials end at '@'.
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'"' | b'\''))
                .unwrap_or(bytes.len() - start);
        from = end.max(start);
        if let Some(at_sign) = text[start..end].rfind('@') {
            if &text[start..start + at_sign] != REDACTED && at_sign > 0 {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = start + at_sign;
            }
        }
        if from >= text.len() {
            break;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_clean_text_borrowed() {
        assert!(matches!(
            redact("model not found", &["sk-secret-123"]),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn replaces_keys_bearer_tokens_and_url_credentials() {
        let text = "Incorrect API key provided: sk-upstream-abcdef. Header was 'Authorization: Bearer sk-upstream-abcdef', \
                    proxy http://alice:s3cret@proxy:3128/ and https://x.test/v1?alt=sse&key=AIzaSyXYZ done";
        let clean = redact(text, &["sk-upstream-abcdef"]);
        assert!(!clean.contains("sk-upstream"), "{clean}");
        assert!(!clean.contains("s3cret"), "{clean}");
        assert!(!clean.contains("alice"), "{clean}");
        assert!(!clean.contains("AIzaSyXYZ"), "{clean}");
        assert!(clean.contains("Bearer [redacted]"), "{clean}");
        assert!(clean.contains("http://[redacted]@proxy:3128/"), "{clean}");
        assert!(clean.ends_with("key=[redacted] done"), "{clean}");
    }

    #[test]
    fn bearer_is_matched_in_any_case_and_short_secrets_are_ignored() {
        assert_eq!(
            redact("BEARER abc.def-ghi rest", &["ab"]),
            "BEARER [redacted] rest"
        );
        assert_eq!(redact("bearer", &[]), "bearer");
        assert_eq!(redact("ends with bearer ", &[]), "ends with bearer ");
    }

    #[test]
    fn multibyte_text_is_safe() {
        let text = "ключ Bearer ключ-секрет и http://ü:ß@höst/ 🙂";
        let clean = redact(text, &["секрет"]);
        assert!(!clean.contains("секрет"));
        assert!(clean.contains("🙂"));
    }
}
