//! `llm-bridge prices` and the price lines of `check`, as a user runs them.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use llm_bridge_core::prices;

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

const CONFIG: &str = "\
providers:
  openai:
    adapter: openai
    base_url: https://api.openai.com/v1
    api_key: sk-test
    models:
      gpt-4o: {}
      o3-mini<high>: {}
      cheap: { upstream_model: gpt-4o-mini, price: { input: 0.1, output: 0.2, cached: 0.05 } }
  local:
    adapter: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-test
    models:
      house-model: {}
      \"*\": {}
";

fn run(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::write(dir.path().join("configs/config.yaml"), CONFIG).unwrap();
    let out = Command::new(BINARY)
        .args(args)
        .current_dir(dir.path())
        .env_remove("ACCESS_API_KEYS")
        .env_remove("LLM_BRIDGE_CONFIG")
        .output()
        .expect("run llm-bridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prices_list_each_configured_model_with_its_price_and_origin() {
    let (code, out, err) = run(&["prices"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "catalog: {}, snapshot {}, ",
            prices::SOURCE,
            prices::SNAPSHOT_DATE
        )),
        "{out}"
    );
    let gpt4o = prices::get("openai", "gpt-4o").unwrap();
    assert!(
        out.contains(&format!(
            "openai/gpt-4o: input {}, output {}, cached {} (catalog: openai/gpt-4o; context {}; max output {})\n",
            gpt4o.input,
            gpt4o.output,
            gpt4o.cache_read.unwrap(),
            gpt4o.context,
            gpt4o.max_output
        )),
        "{out}"
    );
    // The variant tag is not part of the catalog's name.
    assert!(
        out.contains("openai/o3-mini<high>: input ") && out.contains("(catalog: openai/o3-mini;"),
        "{out}"
    );
    // A price in the config wins over the catalog's.
    assert!(
        out.contains("openai/cheap: input 0.1, output 0.2, cached 0.05 (config)\n"),
        "{out}"
    );
    assert!(
        out.contains("local/house-model: no price (cost recorded as 0)\n"),
        "{out}"
    );
    assert!(out.contains("local/*: "), "{out}");
}

#[test]
fn prices_of_one_model_by_provider_or_catalog_name() {
    // Through a configured provider: `*` lets any name through, priced by the catalog.
    let (code, out, err) = run(&["prices", "local/claude-sonnet-4-5-20990101"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("local/claude-sonnet-4-5-20990101: input 3, output 15, cached 0.3, cache_write 3.75 (catalog: anthropic/claude-sonnet-4-5;"),
        "{out}"
    );
    let (code, out, err) = run(&["prices", "openai/cheap"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "openai/cheap: input 0.1, output 0.2, cached 0.05 (config)\n"
    );
    let (code, _, err) = run(&["prices", "openai/gpt-4.1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("openai/gpt-4.1: provider openai does not serve gpt-4.1"),
        "{err}"
    );

    // A catalog name: bare, dated, or `family/model`.
    let (code, out, _) = run(&["prices", "gpt-4o-2099-01-01"]);
    assert_eq!(code, 0);
    assert!(out.contains("(catalog: openai/gpt-4o;"), "{out}");
    let (code, out, _) = run(&["prices", "deepseek/deepseek-chat"]);
    assert_eq!(code, 0);
    assert!(out.contains("(catalog: "), "{out}");
    let (code, _, err) = run(&["prices", "no-such-model"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no-such-model: not a configured provider/model, and not in the catalog"),
        "{err}"
    );

    let (code, out, _) = run(&["prices", "--source"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "source: {}\nsnapshot: {}\n",
            prices::SOURCE,
            prices::SNAPSHOT_DATE
        )
    );
}

#[test]
fn check_flags_models_without_a_price() {
    let (code, out, err) = run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  local/house-model: no price (cost recorded as 0)\n"),
        "{out}"
    );
    assert!(out.contains("  openai/gpt-4o\n"), "{out}");
    assert!(!out.contains("openai/gpt-4o: no price"), "{out}");
}
