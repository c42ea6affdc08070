//! Integration tests, one binary to save link time: recorded traffic translated both ways
//! (`egress`, `ingress`) and property tests that no input panics a translator (`fuzz`).

#![allow(clippy::unwrap_used)]

mod egress;
mod fuzz;
mod ingress;

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

/// The events of a recorded stream as (event name, data): SSE with blank-line separated
/// events, or one JSON object per line (no `event:` lines, name empty).
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
            // A file of one JSON object per line.
            flush(&mut name, &mut data);
            data.push(line.to_owned());
            flush(&mut name, &mut data);
        }
    }
    flush(&mut name, &mut data);
    out
}
