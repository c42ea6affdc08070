//! `provider/model` names.

/// A model named as `provider/model`. The model part may itself contain `/`
/// (`openrouter/meta-llama/llama-3`): the split is at the first `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRef<'a> {
    /// The provider's configured name.
    pub provider: &'a str,
    /// The model's name within the provider.
    pub model: &'a str,
}

impl<'a> ModelRef<'a> {
    /// Splits `provider/model`; `None` for a bare name or an empty side.
    pub fn parse(name: &'a str) -> Option<ModelRef<'a>> {
        let (provider, model) = name.split_once('/')?;
        if provider.is_empty() || model.is_empty() {
            return None;
        }
        Some(ModelRef { provider, model })
    }
}

impl std::fmt::Display for ModelRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_slash() {
        let r = ModelRef::parse("openrouter/meta-llama/llama-3").unwrap();
        assert_eq!(r.provider, "openrouter");
        assert_eq!(r.model, "meta-llama/llama-3");
        assert_eq!(r.to_string(), "openrouter/meta-llama/llama-3");
        assert!(ModelRef::parse("gpt-4o").is_none());
        assert!(ModelRef::parse("/gpt-4o").is_none());
        assert!(ModelRef::parse("closeai/").is_none());
    }
}
