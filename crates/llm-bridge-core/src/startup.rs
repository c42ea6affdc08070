//! Why a configuration cannot start. Not a request error: it has no HTTP status, and it keeps
//! where in the config the problem is (`providers.openai.base_url`), so that `llm-bridge
//! check` and start-up messages name the key, however many layers the check went through.

use std::fmt;

/// A configuration that cannot start: where in it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError {
    path: String,
    message: String,
}

impl StartupError {
    /// A problem with the key at `path` (relative to whoever checks it: `base_url`).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        StartupError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem that belongs to no one key.
    pub fn new(message: impl Into<String>) -> Self {
        Self::at(String::new(), message)
    }

    /// The same problem seen from the enclosing section (`providers.openai` + `base_url`).
    #[must_use]
    pub fn within(mut self, section: &str) -> Self {
        self.path = match (section.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => section.to_owned(),
            (false, false) => format!("{section}.{}", self.path),
        };
        self
    }

    /// Where in the config (empty when nowhere in particular).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for StartupError {}

/// Adapters written against the request error still plug in: its message, at no key.
impl From<crate::Error> for StartupError {
    fn from(e: crate::Error) -> Self {
        StartupError::new(e.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_grows_outwards_and_leads_the_message() {
        let e = StartupError::at("base_url", "not a URL").within("providers.openai");
        assert_eq!(e.path(), "providers.openai.base_url");
        assert_eq!(e.message(), "not a URL");
        assert_eq!(e.to_string(), "providers.openai.base_url: not a URL");
        let e = StartupError::new("no key").within("providers.x");
        assert_eq!(e.to_string(), "providers.x: no key");
        assert_eq!(StartupError::new("plain").within("").to_string(), "plain");
        let from: StartupError = crate::Error::invalid_request("old style").into();
        assert_eq!(from.to_string(), "old style");
    }
}
