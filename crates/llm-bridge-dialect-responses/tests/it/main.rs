//! Integration tests, one binary to save link time: recorded requests and answers
//! translated (`request`, `response`), real chat chunk streams rendered as Responses events
//! and checked by a sequence validator (`stream`), and property tests that no input panics
//! a translator and every stream stays valid (`fuzz`).

#![allow(clippy::unwrap_used)]

mod fuzz;
mod request;
mod response;
mod stream;

use std::collections::BTreeSet;

use serde_json::Value;

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The events of a stream as (event name, data): SSE with blank-line separated events, or
/// one JSON object per line (no `event:` lines, name empty).
pub fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut name, mut data) = (String::new(), Vec::<String>::new());
    let mut flush = |name: &mut String, data: &mut Vec<String>| {
        if !data.is_empty() {
            out.push((std::mem::take(name), data.join("\n")));
            data.clear();
        }
        name.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut name, &mut data);
        } else if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
        } else if line.starts_with('{') {
            flush(&mut name, &mut data);
            data.push(line.to_owned());
            flush(&mut name, &mut data);
        }
    }
    flush(&mut name, &mut data);
    out
}

/// The pivot chunks of a recorded chat stream (`[DONE]` left out).
pub fn chat_chunks(name: &str) -> Vec<String> {
    sse_events(&fixture(name))
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d != "[DONE]")
        .collect()
}

/// Checks a Responses event stream (as written: `event:` + `data:`) and returns its events.
///
/// Rules: each event's `event:` name is its data's `type`; `sequence_number` 0, 1, 2…;
/// `response.created` then `response.in_progress` first; exactly one final event
/// (`response.completed` / `.incomplete` / `.failed`), last; after an `error` event only
/// `response.failed`; output items added with `output_index` 0, 1, 2…, one open at a time,
/// each closed by `output_item.done` with the same id before the next is added; content and
/// summary parts added and done in order within their item; every `.delta` between the
/// `added` and the `.done` of its part or item, with the same ids and indexes; each `.done`
/// text equal to its deltas joined; the final response's `output` the items done (ids, types).
/// Recordings without `event:` lines are checked on their data alone.
pub fn validate(stream: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(stream).map_err(|e| e.to_string())?;
    if !text.is_empty() && !text.ends_with("\n\n") {
        return Err("the stream does not end with a blank line".into());
    }
    let mut events = Vec::new();
    for (name, data) in sse_events(text) {
        let v: Value = serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?;
        if !name.is_empty() && v["type"] != name.as_str() {
            return Err(format!("event {name} carries type {}", v["type"]));
        }
        events.push(v);
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    if kinds.len() < 3 || kinds[0] != "response.created" || kinds[1] != "response.in_progress" {
        return Err(format!("bad start: {kinds:?}"));
    }
    let finals = [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ];
    let last = *kinds.last().unwrap();
    if !finals.contains(&last) || kinds.iter().filter(|k| finals.contains(k)).count() != 1 {
        return Err(format!("bad end: {kinds:?}"));
    }
    let id = events[0]["response"]["id"].clone();
    let mut done_items: Vec<Value> = Vec::new();
    // The open item: (output_index, id, type), its open part (index, kind, text), parts done.
    let mut open: Option<(u64, String, String)> = None;
    let mut part: Option<(u64, String, String)> = None;
    let mut parts_done = 0u64;
    let mut args = String::new();
    let mut errored = false;
    let mut item_ids = BTreeSet::new();
    for (n, e) in events.iter().enumerate() {
        let kind = kinds[n];
        if e["sequence_number"] != n as u64 {
            return Err(format!(
                "event {n} ({kind}) has sequence_number {}",
                e["sequence_number"]
            ));
        }
        if errored && kind != "response.failed" {
            return Err(format!("{kind} after an error event"));
        }
        if let Some(r) = e.get("response") {
            if r["id"] != id || r["object"] != "response" {
                return Err(format!(
                    "{kind}: response id {} / object {}",
                    r["id"], r["object"]
                ));
            }
        }
        let item_id = e["item_id"].as_str().map(str::to_owned);
        let out_index = e["output_index"].as_u64();
        let same_item = |open: &Option<(u64, String, String)>| match open {
            Some((i, id, _)) => Some(*i) == out_index && item_id.as_deref() == Some(id.as_str()),
            None => false,
        };
        match kind {
            "response.output_item.added" => {
                if open.is_some() {
                    return Err(format!("item added at {n} while another is open"));
                }
                let iid = e["item"]["id"].as_str().unwrap_or("").to_owned();
                if out_index != Some(done_items.len() as u64) || !item_ids.insert(iid.clone()) {
                    return Err(format!(
                        "item added at {n} with index {out_index:?} / id {iid}"
                    ));
                }
                open = Some((
                    done_items.len() as u64,
                    iid,
                    e["item"]["type"].as_str().unwrap_or("").to_owned(),
                ));
                parts_done = 0;
                args.clear();
            }
            "response.output_item.done" => {
                let Some((i, iid, t)) = open.take() else {
                    return Err(format!("item done at {n} with none open"));
                };
                if part.is_some() {
                    return Err(format!("item done at {n} with a part open"));
                }
                if Some(i) != out_index
                    || e["item"]["id"] != iid.as_str()
                    || e["item"]["type"] != t.as_str()
                {
                    return Err(format!("item done at {n} does not match the added one"));
                }
                if t == "function_call" && e["item"]["arguments"] != args.as_str() {
                    return Err(format!("call {iid}: arguments differ from their deltas"));
                }
                done_items.push(e["item"].clone());
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                let index_key = if kind.contains("summary") {
                    "summary_index"
                } else {
                    "content_index"
                };
                if !same_item(&open) || part.is_some() || e[index_key] != parts_done {
                    return Err(format!("{kind} at {n} out of place"));
                }
                let pk = e["part"]["type"].as_str().unwrap_or("").to_owned();
                part = Some((parts_done, pk, String::new()));
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta" => {
                let index_key = if kind.contains("summary") {
                    "summary_index"
                } else {
                    "content_index"
                };
                match &mut part {
                    Some((pi, _, text)) if same_item(&open) && e[index_key] == *pi => {
                        text.push_str(e["delta"].as_str().unwrap_or(""));
                    }
                    _ => return Err(format!("{kind} at {n} outside its part")),
                }
            }
            "response.output_text.done"
            | "response.refusal.done"
            | "response.reasoning_summary_text.done" => {
                let key = if kind.contains("refusal") {
                    "refusal"
                } else {
                    "text"
                };
                match &part {
                    Some((_, _, text)) if same_item(&open) && e[key] == text.as_str() => {}
                    _ => return Err(format!("{kind} at {n} does not close its deltas")),
                }
            }
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let Some((pi, pk, text)) = part.take() else {
                    return Err(format!("{kind} at {n} with no part open"));
                };
                let index_key = if kind.contains("summary") {
                    "summary_index"
                } else {
                    "content_index"
                };
                let key = if pk == "refusal" { "refusal" } else { "text" };
                if !same_item(&open)
                    || e[index_key] != pi
                    || e["part"]["type"] != pk.as_str()
                    || e["part"][key] != text.as_str()
                {
                    return Err(format!("{kind} at {n} does not match its part"));
                }
                // The `.done` of the text must have come right before.
                let before = kinds[n - 1];
                if !before.ends_with(".done") || before.contains("part") {
                    return Err(format!("{kind} at {n} without its text .done"));
                }
                parts_done += 1;
            }
            "response.function_call_arguments.delta" => {
                if !same_item(&open) || part.is_some() {
                    return Err(format!("{kind} at {n} outside its call"));
                }
                args.push_str(e["delta"].as_str().unwrap_or(""));
            }
            "response.function_call_arguments.done" => {
                if !same_item(&open) || e["arguments"] != args.as_str() {
                    return Err(format!("{kind} at {n} does not close its deltas"));
                }
            }
            "error" => errored = true,
            "response.created" | "response.in_progress" => {
                if e["response"]["status"] != "in_progress" {
                    return Err(format!("{kind} is not in progress"));
                }
            }
            k if finals.contains(&k) => {
                if open.is_some() {
                    return Err(format!("{k} with an item open"));
                }
                let status = k.trim_start_matches("response.");
                if e["response"]["status"] != status {
                    return Err(format!("{k} with status {}", e["response"]["status"]));
                }
                let ids = |items: &[Value]| -> Vec<(Value, Value)> {
                    items
                        .iter()
                        .map(|i| (i["id"].clone(), i["type"].clone()))
                        .collect()
                };
                let output = e["response"]["output"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if ids(&output) != ids(&done_items) {
                    return Err(format!("{k}: output differs from the items done"));
                }
            }
            other => return Err(format!("unexpected event {other}")),
        }
    }
    Ok(events)
}
