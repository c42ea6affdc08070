//! Pivot message content → Anthropic content blocks, one message at a time.

use llm_bridge_core::Result;
use serde_json::{Map, Value, json};

use crate::egress::request::bad;
use crate::thinking;

/// A user message's content: text parts, images, PDF files.
pub(crate) fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    let param = || format!("messages[{i}].content");
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                out.extend(part_block(part, i, k)?);
            }
            Ok(out)
        }
        Some(_) => Err(bad(
            param(),
            format!("{} must be a string or a list of parts", param()),
        )),
    }
}

/// Anthropic rejects empty text blocks: an empty text is no block.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn part_block(part: &Value, i: usize, k: usize) -> Result<Option<Value>> {
    let param = format!("messages[{i}].content[{k}]");
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" => Ok(part
            .get("text")
            .and_then(Value::as_str)
            .and_then(text_block)),
        "image_url" => {
            let url = part
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&param, format!("{param}: image_url without a url")))?;
            Ok(Some(image_block(url, &param)?))
        }
        "file" => {
            let data = part
                .get("file")
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(&param, format!("{param}: only files sent inline (file_data) are supported by this provider"))
                })?;
            let (media_type, payload) = data_url(data).ok_or_else(|| {
                bad(
                    &param,
                    format!("{param}: file_data must be a base64 data: URL"),
                )
            })?;
            Ok(Some(json!({"type": "document", "source":
                {"type": "base64", "media_type": media_type, "data": payload}})))
        }
        other => Err(bad(
            &param,
            format!("{param}: content of type '{other}' is not supported by this provider"),
        )),
    }
}

/// `data:` URLs are sent inline (base64 source), `http(s)` URLs by reference (url source):
/// Anthropic fetches those itself.
fn image_block(url: &str, param: &str) -> Result<Value> {
    if let Some((media_type, data)) = data_url(url) {
        return Ok(json!({"type": "image", "source":
            {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad(
        param,
        format!("{param}: an image must be a base64 data: URL or an http(s) URL"),
    ))
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

/// An assistant message: its thinking blocks first (Anthropic wants them leading, with
/// their signatures unchanged), then its text, then its tool calls as `tool_use` blocks.
pub(crate) fn assistant_blocks(m: &Map<String, Value>, i: usize) -> Result<Vec<Value>> {
    let mut out = thinking::blocks_of(m);
    match m.get("content") {
        Some(Value::String(s)) => out.extend(text_block(s)),
        Some(Value::Array(parts)) => {
            for part in parts {
                let text = part
                    .get("text")
                    .or_else(|| part.get("refusal"))
                    .and_then(Value::as_str);
                out.extend(text.and_then(text_block));
            }
        }
        _ => {
            if let Some(refusal) = m.get("refusal").and_then(Value::as_str) {
                out.extend(text_block(refusal));
            }
        }
    }
    let calls = m.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let f = call.get("function");
        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
        let Some(name) = name else {
            return Err(bad(&param, format!("{param} has no function name")));
        };
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let input = if args.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(args) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(bad(
                        format!("{param}.function.arguments"),
                        format!("{param}.function.arguments must be a JSON object"),
                    ));
                }
            }
        };
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(out)
}

/// A `tool` message → a `tool_result` block (text, or text and image blocks).
pub(crate) fn tool_result_block(m: &Map<String, Value>, i: usize) -> Result<Value> {
    let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
        return Err(bad(
            format!("messages[{i}].tool_call_id"),
            format!("messages[{i}] (a tool result) has no tool_call_id"),
        ));
    };
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match m.get("content") {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = s.as_str().into(),
        Some(content @ Value::Array(_)) => {
            let parts = user_blocks(Some(content), i)?;
            if !parts.is_empty() {
                block["content"] = Value::Array(parts);
            }
        }
        _ => {}
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(
            data_url("data:image/png;base64,AAA="),
            Some(("image/png", "AAA="))
        );
        assert_eq!(data_url("data:image/png,AAA="), None);
        assert_eq!(data_url("data:;base64,AAA="), None);
        assert_eq!(data_url("https://x/y.png"), None);
    }
}
