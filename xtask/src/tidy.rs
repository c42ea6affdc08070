//! The house rules that a compiler does not check.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Which workspace crates each library may depend on (normal dependencies, not dev).
/// `bin/llm-bridge`, `tests` and `xtask` may depend on anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("llm-bridge-core", &[]),
    ("llm-bridge-http", &["llm-bridge-core"]),
    (
        "llm-bridge-provider-openai",
        &["llm-bridge-core", "llm-bridge-http"],
    ),
    (
        "llm-bridge-provider-gemini",
        &[
            "llm-bridge-core",
            "llm-bridge-http",
            "llm-bridge-dialect-gemini",
        ],
    ),
    ("llm-bridge-dialect-anthropic", &["llm-bridge-core"]),
    ("llm-bridge-dialect-gemini", &["llm-bridge-core"]),
    ("llm-bridge-dialect-responses", &["llm-bridge-core"]),
    (
        "llm-bridge-provider-anthropic",
        &[
            "llm-bridge-core",
            "llm-bridge-http",
            "llm-bridge-dialect-anthropic",
        ],
    ),
    ("llm-bridge-auth", &["llm-bridge-core"]),
    ("llm-bridge-usage", &["llm-bridge-core"]),
    ("llm-bridge-redis", &["llm-bridge-core", "llm-bridge-auth"]),
    ("llm-bridge-router", &["llm-bridge-core"]),
    (
        "llm-bridge-postgres",
        &["llm-bridge-core", "llm-bridge-auth", "llm-bridge-usage"],
    ),
    (
        "llm-bridge-gateway",
        &[
            "llm-bridge-core",
            "llm-bridge-auth",
            "llm-bridge-usage",
            "llm-bridge-router",
        ],
    ),
];

const UNRESTRICTED: &[&str] = &["llm-bridge", "llm-bridge-tests", "xtask"];

pub fn run(root: &Path) -> Result<(), String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("no packages in metadata")?;
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();

    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        if UNRESTRICTED.contains(&name) {
            continue;
        }
        let Some(may) = allowed.get(name) else {
            problems.push(format!(
                "{name}: a new workspace crate: add its allowed dependencies to xtask/src/tidy.rs and DESIGN"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let is_normal = dep["kind"].is_null();
            if is_normal && members.contains(&dep_name) && !may.contains(&dep_name) {
                problems.push(format!(
                    "{name} must not depend on {dep_name} (dependency direction, DESIGN.md)"
                ));
            }
        }
        let dir = Path::new(package["manifest_path"].as_str().unwrap_or_default())
            .parent()
            .map(|d| d.join("src"));
        if let Some(dir) = dir {
            scan_env_reads(&dir, name, &mut problems);
        }
    }
    if problems.is_empty() {
        println!("tidy: ok ({} crates checked)", packages.len());
        Ok(())
    } else {
        Err(format!("tidy found problems:\n  {}", problems.join("\n  ")))
    }
}

/// Libraries receive typed config; only the binary reads the environment.
fn scan_env_reads(dir: &Path, crate_name: &str, problems: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan_env_reads(&path, crate_name, problems);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in ["std::env::var", "env::var(", "std::env::vars"] {
                if code.contains(needle) {
                    problems.push(format!(
                        "{crate_name}: {} reads the environment ({needle}); only bin/llm-bridge may",
                        path.display()
                    ));
                }
            }
        }
    }
}
