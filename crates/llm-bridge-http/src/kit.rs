//! What every adapter keeps and looks up the same way: its name, its models and its keys.
//! An adapter adds only its wire translation and its URL.

use std::sync::Arc;

use futures_util::StreamExt;
use http::HeaderValue;
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_core::{
    Error, ErrorKind, ModelCatalog, ModelEntry, NativeResponse, ProviderConfig, Result,
    StartupError, api_key_env_var,
};

use crate::body::IdleBody;

use crate::keyring::KeyRing;

/// A provider's name, model catalog and key ring, with the lookups every adapter makes.
pub struct ProviderKit {
    /// The provider's configured name.
    pub name: Arc<str>,
    /// Its models (with the price catalog's family).
    pub catalog: ModelCatalog,
    /// Its keys, as the header values the upstream reads them from.
    pub keys: KeyRing,
}

impl std::fmt::Debug for ProviderKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKit")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl ProviderKit {
    /// The kit of provider `name`; `header_value` makes the header value a key is sent as
    /// (`Bearer <key>`, or the key itself), marked sensitive.
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        header_value: impl Fn(&str) -> String,
    ) -> std::result::Result<Self, StartupError> {
        let keys = config
            .api_key
            .keys()
            .iter()
            .map(|k| {
                let mut v =
                    HeaderValue::try_from(header_value(k.expose_secret())).map_err(|_| {
                        StartupError::at(
                            "api_key",
                            "contains characters not allowed in an HTTP header",
                        )
                    })?;
                v.set_sensitive(true);
                Ok(v)
            })
            .collect::<std::result::Result<Vec<_>, StartupError>>()?;
        Ok(ProviderKit {
            name: name.into(),
            catalog: config.catalog(),
            keys: KeyRing::new(keys),
        })
    }

    /// The settings of `model`, or a 404 naming the provider.
    pub fn entry<'a>(&'a self, model: &'a str) -> Result<ModelEntry<'a>> {
        self.catalog.lookup(model).ok_or_else(|| {
            Error::new(
                ErrorKind::ModelNotFound,
                format!("provider '{}' has no model '{model}'", self.name),
            )
            .with_provider(&*self.name)
        })
    }

    /// A forwarded answer as it came ([`llm_bridge_core::ChatProvider::forward`]): its
    /// content type and its body piece by piece, failing when nothing arrives for `idle`.
    pub fn native_answer(
        &self,
        response: http::Response<crate::UpstreamBody>,
        idle: std::time::Duration,
    ) -> NativeResponse {
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let provider = self.name.clone();
        let body = IdleBody::new(response.into_body(), idle)
            .map(move |piece| piece.map_err(|e| e.with_provider(&*provider)));
        NativeResponse {
            content_type,
            body: Box::pin(body),
        }
    }

    /// The key for a request of `session` and its index (see [`KeyRing::pick_for`]), or the
    /// error that the provider has none.
    pub fn key(&self, session: Option<u64>) -> Result<(usize, &HeaderValue)> {
        if self.keys.is_empty() {
            return Err(Error::new(
                ErrorKind::UpstreamAuth,
                format!(
                    "provider '{}' has no API key configured (set {} or providers.{}.api_key)",
                    self.name,
                    api_key_env_var(&self.name),
                    self.name
                ),
            )
            .with_provider(&*self.name));
        }
        self.keys
            .pick_for(session)
            .ok_or_else(|| Error::internal("no API key to pick"))
    }
}
