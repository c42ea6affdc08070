//! `Price::cost` against costs computed by hand, one row per way a vendor reports tokens.
//!
//! The token counts are what the gateway records for each vendor: OpenAI's and Deepseek's
//! `usage` JSON read by `completion_usage`; Anthropic's and Gemini's as their translations
//! produce them (Anthropic: `prompt_tokens` = `input_tokens` + `cache_read_input_tokens` +
//! `cache_creation_input_tokens`; Gemini: `promptTokenCount` includes
//! `cachedContentTokenCount`, completion = candidates + `thoughtsTokenCount`). Prices are the
//! vendors' list prices per million tokens (as in the built-in catalog's snapshot).

#![allow(clippy::unwrap_used)]

use llm_bridge_core::{Price, Usage, completion_usage};

fn price(input: f64, output: f64, cached: Option<f64>, cache_write: Option<f64>) -> Price {
    Price {
        input,
        output,
        cached,
        cache_write,
        reasoning: None,
    }
}

fn openai_usage(json: &str) -> Usage {
    completion_usage(json.as_bytes()).unwrap().unwrap()
}

#[test]
fn costs_by_vendor() {
    let rows: Vec<(&str, Price, Usage, f64)> = vec![
        (
            "openai gpt-4o: 1,500 of 2,000 prompt tokens cached",
            price(2.5, 10.0, Some(1.25), None),
            openai_usage(
                r#"{"usage": {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500,
                    "prompt_tokens_details": {"cached_tokens": 1500}}}"#,
            ),
            // 500 × 2.5 + 1,500 × 1.25 + 500 × 10
            (1_250.0 + 1_875.0 + 5_000.0) / 1e6,
        ),
        (
            "openai o3-mini: reasoning tokens are output tokens",
            price(1.1, 4.4, Some(0.55), None),
            openai_usage(
                r#"{"usage": {"prompt_tokens": 1000, "completion_tokens": 3000,
                    "completion_tokens_details": {"reasoning_tokens": 2000}}}"#,
            ),
            // 1,000 × 1.1 + 3,000 × 4.4
            (1_100.0 + 13_200.0) / 1e6,
        ),
        (
            "anthropic claude-sonnet-4-5: 100 fresh, 20,000 read, 5,000 written",
            price(3.0, 15.0, Some(0.3), Some(3.75)),
            Usage {
                cached_tokens: 20_000,
                cache_write_tokens: 5_000,
                ..Usage::new(100 + 20_000 + 5_000, 800)
            },
            // 100 × 3 + 20,000 × 0.3 + 5,000 × 3.75 + 800 × 15
            (300.0 + 6_000.0 + 18_750.0 + 12_000.0) / 1e6,
        ),
        (
            "gemini-2.5-flash: 8,000 of 10,000 prompt tokens cached, 1,200 thoughts",
            price(0.3, 2.5, Some(0.03), None),
            Usage {
                cached_tokens: 8_000,
                reasoning_tokens: 1_200,
                ..Usage::new(10_000, 300 + 1_200)
            },
            // 2,000 × 0.3 + 8,000 × 0.03 + 1,500 × 2.5
            (600.0 + 240.0 + 3_750.0) / 1e6,
        ),
        (
            "deepseek-chat: 600 cache hits, 400 misses",
            price(0.14, 0.28, Some(0.0028), None),
            openai_usage(
                r#"{"usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                    "prompt_cache_hit_tokens": 600, "prompt_cache_miss_tokens": 400}}"#,
            ),
            // 400 × 0.14 + 600 × 0.0028 + 200 × 0.28
            (56.0 + 1.68 + 56.0) / 1e6,
        ),
        (
            "deepseek-reasoner: reasoning at the output rate, cache hit",
            price(0.14, 0.28, Some(0.0028), None),
            openai_usage(
                r#"{"usage": {"prompt_tokens": 100, "completion_tokens": 1000,
                    "prompt_cache_hit_tokens": 100, "prompt_cache_miss_tokens": 0,
                    "completion_tokens_details": {"reasoning_tokens": 900}}}"#,
            ),
            // 100 × 0.0028 + 1,000 × 0.28
            (0.28 + 280.0) / 1e6,
        ),
        (
            "qwen-plus: reasoning priced apart (700 of 1,000 completion tokens)",
            Price {
                reasoning: Some(4.0),
                ..price(0.4, 1.2, None, None)
            },
            Usage {
                reasoning_tokens: 700,
                ..Usage::new(1_000, 1_000)
            },
            // 1,000 × 0.4 + 300 × 1.2 + 700 × 4
            (400.0 + 360.0 + 2_800.0) / 1e6,
        ),
    ];
    for (case, price, usage, expected) in rows {
        let cost = price.cost(&usage);
        assert!(
            (cost - expected).abs() < 1e-12,
            "{case}: {cost} ≠ {expected} ({usage:?})"
        );
    }
}

#[test]
fn catalog_prices_feed_the_same_rules() {
    let e = llm_bridge_core::prices::get("anthropic", "claude-sonnet-4-5").unwrap();
    let p = e.price();
    assert_eq!(p.cached, e.cache_read);
    assert_eq!(p.cache_write, e.cache_write);
    let u = Usage {
        cached_tokens: 1_000_000,
        ..Usage::new(1_000_000, 0)
    };
    // Cached tokens cost the cache-read rate only, never the input rate as well.
    assert!((p.cost(&u) - e.cache_read.unwrap()).abs() < 1e-12);
}
