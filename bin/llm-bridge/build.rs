//! Records the git commit the binary is built from, for `llm-bridge --version`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=LLM_BRIDGE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref.
    let head = std::path::Path::new("../../.git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed=../../.git/HEAD");
        if let Ok(text) = std::fs::read_to_string(head) {
            if let Some(branch) = text.trim().strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed=../../.git/{branch}");
            }
        }
    }
    println!("cargo:rerun-if-env-changed=LLM_BRIDGE_GIT_COMMIT");
}
