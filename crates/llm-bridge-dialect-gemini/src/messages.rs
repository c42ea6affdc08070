//! OpenAI messages → Gemini `contents` and `systemInstruction`: roles, parts (text, images,
//! audio, files), tool calls and their results, thought signatures. Pure, like the rest of the
//! request translation.

use std::collections::HashMap;

use llm_bridge_core::{Content as OaContent, ContentPart, Message, Result};
use serde_json::{Map, Value};

use crate::errors::bad;
use crate::wire::{Blob, Content, FileData, FunctionCall, FunctionResponse, Part};

/// What Gemini 3 accepts in place of a lost thought signature (Google's documented escape
/// hatch for histories it did not produce). Without it, a Gemini 3 function-call turn whose
/// signature the client dropped is a 400.
pub(crate) const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Collects turns, merging consecutive ones of the same role: Gemini wants them to alternate,
/// and parallel tool results must arrive together in one turn.
#[derive(Default)]
struct Turns {
    contents: Vec<Content>,
}

impl Turns {
    fn push(&mut self, role: &str, parts: Vec<Part>) {
        if parts.is_empty() {
            // Gemini rejects a turn without parts.
            return;
        }
        match self.contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => self.contents.push(Content {
                role: Some(role.to_owned()),
                parts,
            }),
        }
    }
}

/// The turns of a conversation and its system instruction.
pub(crate) fn contents(
    messages: &[Message],
    gemini3: bool,
) -> Result<(Vec<Content>, Option<Content>)> {
    let mut turns = Turns::default();
    let mut system = Vec::new();
    // Tool results name their call by id; Gemini wants the function's name.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match message.role.as_str() {
            "system" | "developer" => system.extend(text_parts(message, &param)?),
            "user" => turns.push("user", user_parts(message, &param)?),
            "assistant" => {
                let parts = assistant_parts(message, &param, &mut call_names)?;
                turns.push("model", parts);
            }
            "tool" => {
                let part = tool_result(message, &param, &call_names)?;
                turns.push("user", vec![part]);
            }
            other => {
                return Err(bad(
                    format!("{param}.role"),
                    format!("role '{other}' is not supported by the gemini adapter"),
                ));
            }
        }
    }
    let mut contents = turns.contents;
    let mut system = (!system.is_empty()).then(|| Content {
        role: None,
        parts: system,
    });
    if contents.is_empty() {
        // OpenAI answers a conversation of only instructions; Gemini needs a user turn.
        match system.take() {
            Some(s) => contents.push(Content {
                role: Some("user".into()),
                parts: s.parts,
            }),
            None => {
                return Err(bad(
                    "messages",
                    "the messages have no content to send to the model",
                ));
            }
        }
    }
    if gemini3 {
        for turn in contents
            .iter_mut()
            .filter(|c| c.role.as_deref() == Some("model"))
        {
            // Only the first call of a parallel set carries Gemini's signature; a turn whose
            // calls carry none at all lost it on the client's side.
            let signed = turn
                .parts
                .iter()
                .any(|p| p.function_call.is_some() && p.thought_signature.is_some());
            if let Some(first) = turn.parts.iter_mut().find(|p| p.function_call.is_some()) {
                if !signed {
                    tracing::debug!(
                        "a function call reached the gemini adapter without its thought signature"
                    );
                    first.thought_signature = Some(SKIP_SIGNATURE.into());
                }
            }
        }
    }
    Ok((contents, system))
}

fn text_of_parts(parts: &[ContentPart], param: &str, allow_refusal: bool) -> Result<Vec<Part>> {
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let text = match part.kind.as_str() {
            "text" => part.text.clone(),
            "refusal" if allow_refusal => part
                .extra
                .get("refusal")
                .and_then(Value::as_str)
                .map(str::to_owned),
            other => {
                return Err(bad(
                    format!("{param}.content[{j}]"),
                    format!("content part type '{other}' is not supported in this message"),
                ));
            }
        };
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            out.push(Part::text(t));
        }
    }
    Ok(out)
}

/// Text of a system, developer or assistant message; Gemini rejects empty text parts.
fn text_parts(message: &Message, param: &str) -> Result<Vec<Part>> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(OaContent::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(OaContent::Text(t)) => Ok(vec![Part::text(t.clone())]),
        Some(OaContent::Parts(parts)) => text_of_parts(parts, param, false),
    }
}

fn user_parts(message: &Message, param: &str) -> Result<Vec<Part>> {
    let parts = match &message.content {
        None => return Ok(Vec::new()),
        Some(OaContent::Text(t)) if t.is_empty() => return Ok(Vec::new()),
        Some(OaContent::Text(t)) => return Ok(vec![Part::text(t.clone())]),
        Some(OaContent::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let param = format!("{param}.content[{j}]");
        match part.kind.as_str() {
            "text" => {
                if let Some(t) = part.text.as_ref().filter(|t| !t.is_empty()) {
                    out.push(Part::text(t.clone()));
                }
            }
            "image_url" => {
                let url = part
                    .image_url
                    .as_ref()
                    .map(|i| i.url.as_str())
                    .ok_or_else(|| bad(&param, "an image_url part needs image_url.url"))?;
                out.push(image_part(url, &format!("{param}.image_url.url"))?);
            }
            "input_audio" => out.push(audio_part(part, &param)?),
            "file" => out.push(file_part(part, &param)?),
            other => {
                return Err(bad(
                    param,
                    format!("content part type '{other}' is not supported by the gemini adapter"),
                ));
            }
        }
    }
    Ok(out)
}

fn inline(mime_type: String, data: String) -> Part {
    Part {
        inline_data: Some(Blob { mime_type, data }),
        ..Part::default()
    }
}

fn image_part(url: &str, param: &str) -> Result<Part> {
    if url.starts_with("data:") {
        let (mime, data) = data_url(url, param)?;
        return Ok(inline(mime, data));
    }
    if url.starts_with("https://generativelanguage.googleapis.com/") {
        // A file uploaded through Gemini's Files API: Gemini reads it itself.
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: None,
                file_uri: url.to_owned(),
            }),
            ..Part::default()
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(bad(
            param,
            "the gemini adapter does not fetch image URLs: send the image inline as a data URL \
             (data:image/png;base64,…)",
        ));
    }
    Err(bad(param, "an image URL must be a data: URL"))
}

/// `data:<mime>[;params];base64,<data>` → (mime, base64 data).
fn data_url(url: &str, param: &str) -> Result<(String, String)> {
    let malformed = || {
        bad(
            param,
            "malformed data URL: expected data:<mime type>;base64,<data>",
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(malformed)?;
    let (meta, data) = rest.split_once(',').ok_or_else(malformed)?;
    let meta = meta.strip_suffix(";base64").ok_or_else(malformed)?;
    let mime = meta.split(';').next().unwrap_or_default().trim();
    if mime.is_empty() || !mime.contains('/') || data.is_empty() {
        return Err(malformed());
    }
    Ok((mime.to_owned(), data.to_owned()))
}

fn audio_part(part: &ContentPart, param: &str) -> Result<Part> {
    let audio = part.extra.get("input_audio");
    let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
    let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
    match (data, format) {
        (Some(data), Some(format)) if !data.is_empty() && !format.is_empty() => {
            Ok(inline(format!("audio/{format}"), data.to_owned()))
        }
        _ => Err(bad(
            param,
            "an input_audio part needs input_audio.data and input_audio.format",
        )),
    }
}

fn file_part(part: &ContentPart, param: &str) -> Result<Part> {
    let file = part.extra.get("file");
    match file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
    {
        Some(url) => {
            let (mime, data) = data_url(url, &format!("{param}.file.file_data"))?;
            Ok(inline(mime, data))
        }
        None => Err(bad(
            param,
            "a file part needs file.file_data (a data URL); file ids are not supported by the \
             gemini adapter",
        )),
    }
}

/// The Gemini signature carried on an OpenAI object as
/// `extra_content.google.thought_signature` (Google's own convention).
pub(crate) fn signature_of(extra: &Map<String, Value>) -> Option<String> {
    extra
        .get("extra_content")?
        .get("google")?
        .get("thought_signature")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn assistant_parts(
    message: &Message,
    param: &str,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<Part>> {
    let mut parts = match &message.content {
        Some(OaContent::Parts(p)) => text_of_parts(p, param, true)?,
        _ => text_parts(message, param)?,
    };
    if message.reasoning_content.is_some() {
        tracing::debug!("reasoning_content of an earlier turn is not sent to gemini");
    }
    // A text answer's signature is carried on the message; it goes back on its last part.
    if let Some(signature) = signature_of(&message.extra) {
        if let Some(last) = parts.last_mut() {
            last.thought_signature = Some(signature);
        }
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let param = format!("{param}.tool_calls[{j}]");
        let args = arguments(&call.function.arguments, &param)?;
        if !call.id.is_empty() {
            call_names.insert(call.id.clone(), call.function.name.clone());
        }
        parts.push(Part {
            function_call: Some(FunctionCall {
                id: None,
                name: call.function.name.clone(),
                args: Some(args),
            }),
            thought_signature: signature_of(&call.extra),
            ..Part::default()
        });
    }
    Ok(parts)
}

fn arguments(arguments: &str, param: &str) -> Result<Value> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad(
            format!("{param}.function.arguments"),
            "tool call arguments must be a JSON object",
        )),
        Err(e) => Err(bad(
            format!("{param}.function.arguments"),
            format!("tool call arguments are not valid JSON: {e}"),
        )),
    }
}

fn tool_result(
    message: &Message,
    param: &str,
    call_names: &HashMap<String, String>,
) -> Result<Part> {
    let id = message.tool_call_id.as_deref().unwrap_or_default();
    let name = call_names
        .get(id)
        .cloned()
        .or_else(|| message.name.clone())
        .ok_or_else(|| {
            bad(
                format!("{param}.tool_call_id"),
                format!(
                    "tool_call_id '{id}' does not match a tool call of an earlier assistant message"
                ),
            )
        })?;
    let text = match &message.content {
        None => String::new(),
        Some(OaContent::Text(t)) => t.clone(),
        Some(OaContent::Parts(parts)) => text_of_parts(parts, param, false)?
            .into_iter()
            .filter_map(|p| p.text)
            .collect(),
    };
    // Gemini wants an object; anything else is wrapped so that nothing is lost.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => serde_json::json!({ "result": v }),
        Err(_) => serde_json::json!({ "result": text }),
    };
    Ok(Part {
        function_response: Some(FunctionResponse {
            id: None,
            name,
            response,
        }),
        ..Part::default()
    })
}
