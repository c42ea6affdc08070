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

pub(crate) fn run(root: &Path) -> Result<(), String> {
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
                "{name}: a new workspace crate: add its allowed dependencies to xtask/src/tidy.rs and docs/architecture.md"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let is_normal = dep["kind"].is_null();
            if is_normal && members.contains(&dep_name) && !may.contains(&dep_name) {
                problems.push(format!(
                    "{name} must not depend on {dep_name} (dependency direction, docs/architecture.md)"
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
    let dependencies = check_dependencies(root, &mut problems)?;
    if problems.is_empty() {
        println!(
            "tidy: ok ({} crates checked; {dependencies} dependencies: licenses, bans, duplicates)",
            packages.len()
        );
        Ok(())
    } else {
        Err(format!("tidy found problems:\n  {}", problems.join("\n  ")))
    }
}

/// Licenses a dependency may carry (one alternative of each `AND` part of its expression).
const LICENSES: &[&str] = &[
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "CC0-1.0",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "BSL-1.0",
    "CDLA-Permissive-2.0",
];

/// Crates that must not be in the build: a second TLS or crypto stack beside rustls and
/// ring (docs/architecture.md: ring, not aws-lc; no OpenSSL to install or link).
const BANNED: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
];

/// Heavy crates that must be in the build once only: two versions would be compiled twice.
const SINGLE: &[&str] = &[
    "tokio",
    "hyper",
    "h2",
    "http",
    "rustls",
    "ring",
    "serde",
    "serde_json",
    "rusqlite",
    "tokio-postgres",
    "redis",
];

/// What `cargo deny check licenses bans` would check, from `cargo metadata` alone (it runs
/// offline; advisories need the RustSec database from the network, which CI does not have):
/// every dependency's license, no banned crate, one version of each heavy crate. Returns the
/// number of dependencies checked.
fn check_dependencies(root: &Path, problems: &mut Vec<String>) -> Result<usize, String> {
    // The dependencies built here (others, e.g. Windows-only ones, need not be downloaded).
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV names no host")?;
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata (with dependencies) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("no packages in metadata")?;
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut checked = 0;
    for package in packages {
        // Ours: the workspace's own crates have no registry source.
        if package["source"].is_null() {
            continue;
        }
        checked += 1;
        let name = package["name"].as_str().unwrap_or_default();
        let version = package["version"].as_str().unwrap_or_default();
        versions.entry(name).or_default().push(version);
        if BANNED.contains(&name) {
            problems.push(format!(
                "{name} {version} is in the build: it is banned (a second TLS or crypto stack)"
            ));
        }
        match package["license"].as_str() {
            Some(expression) if license_allowed(expression) => {}
            Some(expression) => problems.push(format!(
                "{name} {version}: license '{expression}' is not in the allowed list (xtask/src/tidy.rs)"
            )),
            None => problems.push(format!("{name} {version}: no SPDX license expression")),
        }
    }
    for name in SINGLE {
        if let Some(found) = versions.get(name).filter(|v| v.len() > 1) {
            problems.push(format!(
                "{name} is built in {} versions ({}): one is enough",
                found.len(),
                found.join(", ")
            ));
        }
    }
    Ok(checked)
}

/// Whether an SPDX expression allows use under one of [`LICENSES`]: each `AND` part needs
/// one allowed alternative (`OR`); exceptions (`WITH …`) only widen a license.
fn license_allowed(expression: &str) -> bool {
    let flat = expression.replace(['(', ')'], " ").replace('/', " OR ");
    flat.split(" AND ").all(|part| {
        part.split(" OR ").any(|alternative| {
            let id = alternative
                .split(" WITH ")
                .next()
                .unwrap_or_default()
                .trim();
            LICENSES.contains(&id)
        })
    })
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

#[cfg(test)]
mod tests {
    use super::license_allowed;

    #[test]
    fn license_expressions_need_an_allowed_alternative_in_every_part() {
        assert!(license_allowed("MIT"));
        assert!(license_allowed("MIT OR Apache-2.0"));
        assert!(license_allowed("MIT/Apache-2.0"));
        assert!(license_allowed("Apache-2.0 WITH LLVM-exception"));
        assert!(license_allowed("(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(license_allowed("Apache-2.0 AND ISC"));
        assert!(!license_allowed("GPL-3.0"));
        assert!(!license_allowed("MIT AND GPL-3.0"));
        assert!(license_allowed("GPL-3.0 OR MIT"));
    }
}
