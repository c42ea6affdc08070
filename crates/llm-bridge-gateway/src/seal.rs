//! Provider state that must survive a stateless round trip through a client.
//!
//! A translated answer can carry state its provider needs back on the next turn: Gemini's
//! thought signatures (`extra_content.google` on a message or a tool call), Anthropic's signed
//! thinking blocks (`extra_content.anthropic`). A client of a dialect that cannot carry them
//! (Codex on `/v1/responses` with `store: false`) asks for `encrypted_content` instead: the
//! gateway seals that state with a server key (ChaCha20-Poly1305) into
//! `extra_content.llm_bridge.encrypted_reasoning`, which the dialect renders as the reasoning
//! item's `encrypted_content`; when the client sends it back, the state is unsealed onto the
//! pivot request again. A blob that is ours but altered is a 400; a blob that is not ours
//! (another upstream's own encrypted reasoning) is left out.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use llm_bridge_core::{ChatRequest, Error};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Map, Value, json};

/// What sealed blobs start with, so that other upstreams' blobs are told apart.
const PREFIX: &str = "llmb1.";

/// Seals and unseals provider state with the server's key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer with a 256-bit key.
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for ChaCha20-Poly1305"));
        Sealer {
            key: LessSafeKey::new(unbound),
        }
    }

    fn seal(&self, plain: &[u8]) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// `Ok(None)` for a blob that is not ours; an error for one that is ours but altered.
    fn open(&self, sealed: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(body) = sealed.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let tampered = || {
            Error::invalid_request(
                "encrypted_content was altered: it does not unseal with this gateway's key",
            )
            .with_param("input")
        };
        let mut bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| tampered())?;
        if bytes.len() < NONCE_LEN {
            return Err(tampered());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| tampered())?;
        Ok(Some(plain.to_vec()))
    }

    /// Seals the provider state of one pivot message or delta (its `extra_content` and its
    /// tool calls' `extra_content`) into `extra_content.llm_bridge.encrypted_reasoning`.
    pub fn seal_state(&self, message: &mut Map<String, Value>) {
        let own = |v: &Value| -> Option<Value> {
            let mut extra = v.as_object()?.clone();
            extra.remove("llm_bridge");
            (!extra.is_empty()).then_some(Value::Object(extra))
        };
        let message_state = message.get("extra_content").and_then(own);
        let calls: Vec<Value> = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|call| {
                let extra = call.get("extra_content").and_then(own)?;
                Some(json!({"id": call.get("id"), "index": call.get("index"), "extra_content": extra}))
            })
            .collect();
        if message_state.is_none() && calls.is_empty() {
            return;
        }
        let state = json!({"extra_content": message_state, "tool_calls": calls});
        let Some(blob) = self.seal(state.to_string().as_bytes()) else {
            return;
        };
        let extra = message.entry("extra_content").or_insert_with(|| json!({}));
        if let Some(extra) = extra.as_object_mut() {
            extra.insert("llm_bridge".into(), json!({"encrypted_reasoning": [blob]}));
        }
    }

    /// Unseals the state carried back on the request's assistant messages, restoring it where
    /// it was (the message's and each tool call's `extra_content`, tool calls matched by id).
    pub fn unseal_request(&self, request: &mut ChatRequest) -> Result<(), Error> {
        let Some(messages) = request
            .body_mut()
            .get_mut("messages")
            .and_then(Value::as_array_mut)
        else {
            return Ok(());
        };
        for message in messages.iter_mut().filter_map(Value::as_object_mut) {
            let blobs = message
                .get_mut("extra_content")
                .and_then(Value::as_object_mut)
                .and_then(|extra| extra.remove("llm_bridge"))
                .and_then(|ours| ours.get("encrypted_reasoning").cloned());
            if message
                .get("extra_content")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                message.remove("extra_content");
            }
            let blobs = match blobs {
                Some(Value::Array(list)) => list,
                Some(one) => vec![one],
                None => continue,
            };
            for blob in blobs.iter().filter_map(Value::as_str) {
                let Some(plain) = self.open(blob)? else {
                    tracing::debug!("left out an encrypted_content this gateway did not make");
                    continue;
                };
                let state: Value = serde_json::from_slice(&plain).unwrap_or(Value::Null);
                restore(message, &state);
            }
        }
        Ok(())
    }
}

/// Puts unsealed state back onto a pivot assistant message.
fn restore(message: &mut Map<String, Value>, state: &Value) {
    if let Some(extra) = state.get("extra_content").and_then(Value::as_object) {
        let target = message.entry("extra_content").or_insert_with(|| json!({}));
        if let Some(target) = target.as_object_mut() {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) else {
        return;
    };
    for sealed in state
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = sealed.get("id").and_then(Value::as_str);
        if let Some(call) = calls
            .iter_mut()
            .find(|c| id.is_some() && c.get("id").and_then(Value::as_str) == id)
            .and_then(Value::as_object_mut)
        {
            call.insert("extra_content".into(), sealed["extra_content"].clone());
        }
    }
}

/// The pivot chunk or completion with every choice's provider state sealed (its `delta` or
/// `message`); `None` when there was none (the bytes stay as they are).
pub(crate) fn seal_answer(sealer: &Sealer, json: &[u8]) -> Option<bytes::Bytes> {
    memchr::memmem::find(json, b"\"extra_content\"")?;
    let mut value: Value = serde_json::from_slice(json).ok()?;
    for choice in value
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for key in ["delta", "message"] {
            if let Some(m) = choice.get_mut(key).and_then(Value::as_object_mut) {
                sealer.seal_state(m);
            }
        }
    }
    serde_json::to_vec(&value).ok().map(bytes::Bytes::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn state_survives_a_round_trip_and_alterations_are_refused() {
        let sealer = Sealer::new(&[7; 32]);
        let mut message = json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"},
                            "extra_content": {"google": {"thought_signature": "c2ln"}}}]});
        sealer.seal_state(message.as_object_mut().unwrap());
        let blob = message["extra_content"]["llm_bridge"]["encrypted_reasoning"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(blob.starts_with(PREFIX));
        assert!(!blob.contains("c2ln"), "sealed, not merely encoded");

        // The client sends the blob back on the next turn, the call without its state.
        let back = |blob: &str| {
            ChatRequest::from_value(json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": null,
                 "extra_content": {"llm_bridge": {"encrypted_reasoning": [blob]}},
                 "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]}))
            .unwrap()
        };
        let mut request = back(&blob);
        sealer.unseal_request(&mut request).unwrap();
        let assistant = &request.messages()[1];
        assert_eq!(
            assistant["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
            "c2ln"
        );
        assert!(
            assistant.get("extra_content").is_none(),
            "ours is gone: {assistant}"
        );

        // Altered: refused. Another key: refused. Not ours at all: left out.
        let mut altered = blob.clone();
        altered.replace_range(PREFIX.len()..PREFIX.len() + 2, "AA");
        assert_eq!(
            Sealer::new(&[7; 32])
                .unseal_request(&mut back(&altered))
                .unwrap_err()
                .status(),
            400
        );
        assert!(
            Sealer::new(&[8; 32])
                .unseal_request(&mut back(&blob))
                .is_err()
        );
        let mut foreign = back("gAAAAABfromanotherupstream");
        sealer.unseal_request(&mut foreign).unwrap();
        assert!(
            foreign.messages()[1]["tool_calls"][0]
                .get("extra_content")
                .is_none()
        );
    }
}
