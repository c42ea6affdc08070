//! Adapter name → provider constructor. The one place where adapters meet the server: a
//! third-party provider crate plugs in by registering its constructor here.

use std::collections::BTreeMap;
use std::sync::Arc;

use llm_bridge_core::{ChatProvider, ProviderConfig, StartupError};
use llm_bridge_http::UpstreamClient;
use llm_bridge_provider_anthropic::AnthropicProvider;
use llm_bridge_provider_gemini::GeminiProvider;
use llm_bridge_provider_openai::OpenAiProvider;

/// What a constructor gives: the provider, or why its config cannot start (an adapter's
/// request `Error` converts, as a message at no key).
pub type Built = Result<Arc<dyn ChatProvider>, StartupError>;

/// Builds a provider from its name, its config and a client set up for it (proxy, TLS).
pub type Constructor = Box<dyn Fn(&str, &ProviderConfig, UpstreamClient) -> Built + Send + Sync>;

/// The known adapters.
pub struct Registry {
    adapters: BTreeMap<String, Constructor>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry {
            adapters: BTreeMap::new(),
        }
    }

    /// The adapters built into llm-bridge.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register("openai", |name, config, client| {
            Ok(Arc::new(OpenAiProvider::new(name, config, client)?))
        });
        r.register("gemini", |name, config, client| {
            Ok(Arc::new(GeminiProvider::new(name, config, client)?))
        });
        r.register("anthropic", |name, config, client| {
            Ok(Arc::new(AnthropicProvider::new(name, config, client)?))
        });
        r
    }

    /// Adds (or replaces) an adapter.
    pub fn register(
        &mut self,
        adapter: &str,
        constructor: impl Fn(&str, &ProviderConfig, UpstreamClient) -> Built + Send + Sync + 'static,
    ) {
        self.adapters
            .insert(adapter.to_owned(), Box::new(constructor));
    }

    /// The adapter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.adapters.keys().map(String::as_str)
    }

    /// Builds the provider `name`.
    pub fn build(&self, name: &str, config: &ProviderConfig, client: UpstreamClient) -> Built {
        let Some(constructor) = self.adapters.get(&config.adapter) else {
            return Err(StartupError::at(
                "adapter",
                format!(
                    "unknown adapter \"{}\" (known: {})",
                    config.adapter,
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        constructor(name, config, client)
    }
}
