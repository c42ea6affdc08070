use std::sync::Arc;

use indexmap::IndexMap;
use llm_bridge_core::{
    ChatProvider, ChatRequest, ChatResponse, ChunkStream, Error, ErrorKind, ModelRef, Price, Result,
};
use serde::Deserialize;

/// Router settings from the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The provider for model names without `provider/`.
    #[serde(default)]
    pub default_provider: Option<String>,
}

/// A provider and a model name within it.
#[derive(Clone)]
pub struct Target {
    /// The provider.
    pub provider: Arc<dyn ChatProvider>,
    /// The model's name within the provider (as configured, `<…>` tag included).
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .finish()
    }
}

impl Target {
    /// `provider/model`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.provider.name(), self.model)
    }

    /// The model's prices, if configured.
    pub fn price(&self) -> Option<Price> {
        self.provider
            .catalog()
            .lookup(&self.model)
            .and_then(|e| e.config.price)
    }

    /// The model name the upstream receives.
    pub fn upstream_model(&self) -> String {
        self.provider
            .catalog()
            .lookup(&self.model)
            .map(|e| e.upstream_name().to_owned())
            .unwrap_or_else(|| self.model.clone())
    }
}

/// An answer and the target that produced it.
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The model within that provider.
    pub model: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    /// The model's prices, if configured.
    pub price: Option<Price>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    /// `provider/model`.
    pub id: String,
    /// The provider.
    pub owned_by: String,
}

/// Resolves model names and sends requests to providers.
pub struct Router {
    providers: IndexMap<String, Arc<dyn ChatProvider>>,
    config: RouterConfig,
}

impl Router {
    /// A router over these providers.
    pub fn new(providers: Vec<Arc<dyn ChatProvider>>, config: RouterConfig) -> Result<Self> {
        let mut map = IndexMap::new();
        for p in providers {
            let name = p.name().to_owned();
            if map.insert(name.clone(), p).is_some() {
                return Err(Error::invalid_request(format!(
                    "provider '{name}' is defined twice"
                )));
            }
        }
        if let Some(default) = &config.default_provider {
            if !map.contains_key(default) {
                return Err(Error::invalid_request(format!(
                    "default_provider: no provider named '{default}'"
                )));
            }
        }
        Ok(Router {
            providers: map,
            config,
        })
    }

    /// The providers, in config order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn ChatProvider>> {
        self.providers.values()
    }

    /// Finds the target for a model name.
    pub fn resolve(&self, name: &str) -> Result<Target> {
        let name = name.trim();
        if let Some(r) = ModelRef::parse(name) {
            if let Some(provider) = self.providers.get(r.provider) {
                if provider.catalog().lookup(r.model).is_some() {
                    return Ok(Target {
                        provider: provider.clone(),
                        model: r.model.to_owned(),
                    });
                }
                return Err(not_found(format!(
                    "model '{}' is not served by provider '{}'",
                    r.model, r.provider
                )));
            }
        }
        if let Some(target) = self.resolve_bare(name) {
            return Ok(target);
        }
        Err(not_found(match ModelRef::parse(name) {
            Some(r) => format!("unknown provider '{}' in model '{name}'", r.provider),
            None => {
                format!("unknown model '{name}': name it as provider/model (see GET /v1/models)")
            }
        }))
    }

    fn resolve_bare(&self, name: &str) -> Option<Target> {
        let target = |p: &Arc<dyn ChatProvider>| Target {
            provider: p.clone(),
            model: name.to_owned(),
        };
        if let Some(default) = &self.config.default_provider {
            let p = &self.providers[default.as_str()];
            return p.catalog().lookup(name).is_some().then(|| target(p));
        }
        let mut listing = self.providers.values().filter(|p| p.catalog().lists(name));
        match (listing.next(), listing.next()) {
            (Some(p), None) => Some(target(p)),
            _ => None,
        }
    }

    /// A complete answer.
    pub async fn chat(&self, request: ChatRequest) -> Result<Served<ChatResponse>> {
        let target = self.resolve(request.model())?;
        let value = target.provider.chat(&target.model, request).await?;
        Ok(served(target, value))
    }

    /// A stream of chunks.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<Served<ChunkStream>> {
        let target = self.resolve(request.model())?;
        let value = target.provider.chat_stream(&target.model, request).await?;
        Ok(served(target, value))
    }

    /// Every model a client can name, as `provider/model`.
    pub fn models(&self) -> Vec<ModelListing> {
        self.providers
            .values()
            .flat_map(|p| {
                p.catalog().names().map(move |m| ModelListing {
                    id: format!("{}/{m}", p.name()),
                    owned_by: p.name().to_owned(),
                })
            })
            .collect()
    }
}

fn served<T>(target: Target, value: T) -> Served<T> {
    Served {
        upstream_model: target.upstream_model(),
        price: target.price(),
        provider: target.provider.name().into(),
        model: target.model,
        value,
    }
}

fn not_found(message: String) -> Error {
    Error::new(ErrorKind::ModelNotFound, message).with_param("model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use llm_bridge_core::{ModelCatalog, ModelConfig};

    struct Named {
        name: String,
        catalog: ModelCatalog,
    }

    #[async_trait]
    impl ChatProvider for Named {
        fn name(&self) -> &str {
            &self.name
        }
        fn catalog(&self) -> &ModelCatalog {
            &self.catalog
        }
        async fn chat(&self, _: &str, _: ChatRequest) -> Result<ChatResponse> {
            Err(Error::internal("unused"))
        }
        async fn chat_stream(&self, _: &str, _: ChatRequest) -> Result<ChunkStream> {
            Err(Error::internal("unused"))
        }
    }

    fn provider(name: &str, models: &[&str]) -> Arc<dyn ChatProvider> {
        Arc::new(Named {
            name: name.into(),
            catalog: ModelCatalog::new(
                models
                    .iter()
                    .map(|m| ((*m).to_owned(), ModelConfig::default()))
                    .collect(),
            ),
        })
    }

    fn router(default: Option<&str>) -> Router {
        Router::new(
            vec![
                provider("closeai", &["gpt-4o", "deepseek-chat"]),
                provider("deepseek", &["deepseek-chat", "deepseek-reasoner"]),
                provider("openrouter", &["*"]),
            ],
            RouterConfig {
                default_provider: default.map(str::to_owned),
            },
        )
        .unwrap()
    }

    #[test]
    fn provider_slash_model() {
        let r = router(None);
        assert_eq!(
            r.resolve("deepseek/deepseek-chat").unwrap().id(),
            "deepseek/deepseek-chat"
        );
        assert_eq!(
            r.resolve("openrouter/meta-llama/llama-3").unwrap().id(),
            "openrouter/meta-llama/llama-3"
        );
        let e = r.resolve("closeai/gpt-5").unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(e.code(), Some("model_not_found"));
        assert!(
            r.resolve("nobody/gpt-4o")
                .unwrap_err()
                .message()
                .contains("unknown provider")
        );
    }

    #[test]
    fn bare_names_need_a_unique_provider_or_the_default() {
        let r = router(None);
        assert_eq!(r.resolve("gpt-4o").unwrap().id(), "closeai/gpt-4o");
        assert_eq!(r.resolve("deepseek-chat").unwrap_err().status(), 404);
        let r = router(Some("deepseek"));
        assert_eq!(
            r.resolve("deepseek-chat").unwrap().id(),
            "deepseek/deepseek-chat"
        );
        assert_eq!(r.resolve("gpt-4o").unwrap_err().status(), 404);
        let r = router(Some("openrouter"));
        assert_eq!(
            r.resolve("meta-llama/llama-3").unwrap().id(),
            "openrouter/meta-llama/llama-3"
        );
    }

    #[test]
    fn lists_explicit_models_only() {
        let ids: Vec<_> = router(None).models().into_iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            [
                "closeai/gpt-4o",
                "closeai/deepseek-chat",
                "deepseek/deepseek-chat",
                "deepseek/deepseek-reasoner"
            ]
        );
    }

    #[test]
    fn unknown_default_provider_is_refused() {
        let e = Router::new(
            vec![provider("a", &[])],
            RouterConfig {
                default_provider: Some("b".into()),
            },
        )
        .err()
        .unwrap();
        assert!(e.message().contains("default_provider"));
    }
}
