//! Starting the real gateway in-process on an ephemeral port.

use llm_bridge::app::Environment;
use llm_bridge::{App, AppConfig, Registry, RunningApp};
use llm_bridge_core::secrecy::SecretString;

use crate::client::Client;

/// The access key test gateways accept.
pub const TEST_KEY: &str = "sk-test-key-0123456789";

/// The admin key test gateways accept (`ADMIN_API_KEYS`).
pub const ADMIN_KEY: &str = "sk-test-admin-0123456789";

/// A gateway serving in the background, with a client holding a valid key.
pub struct TestGateway {
    /// The running gateway.
    pub app: RunningApp,
    /// A client with [`TEST_KEY`].
    pub client: Client,
    /// The usage database (in a temporary folder unless the config names one).
    pub usage_db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway from YAML with [`TEST_KEY`] as its only access key.
    pub async fn start(yaml: &str) -> TestGateway {
        Self::start_with(yaml, &[]).await
    }

    /// Starts a gateway from YAML with extra environment variables (`NAME_API_KEY`, …).
    pub async fn start_with(yaml: &str, vars: &[(&str, &str)]) -> TestGateway {
        Self::start_with_registry(yaml, vars, &Registry::builtin()).await
    }

    /// Like [`TestGateway::start_with`], with the adapters of `registry` (third-party providers).
    pub async fn start_with_registry(
        yaml: &str,
        vars: &[(&str, &str)],
        registry: &Registry,
    ) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = AppConfig::from_yaml(yaml).unwrap_or_else(|e| panic!("test config: {e}"));
        if !yaml.lines().any(|l| l.starts_with("usage:")) {
            config.usage.database = dir.path().join("usage.db").into();
        }
        // One attempt per request unless a test is about retries: a scripted upstream failure
        // should reach the client as it is.
        if !yaml.lines().any(|l| l.starts_with("retry:")) {
            config.retry.attempts = 1;
        }
        // A PostgreSQL database has no file: those tests read it through the store.
        let usage_db = config
            .usage
            .database
            .sqlite_path()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut env = Environment {
            access_api_keys: Some(SecretString::from(TEST_KEY.to_owned())),
            admin_api_keys: Some(SecretString::from(ADMIN_KEY.to_owned())),
            ..Environment::default()
        };
        for (k, v) in vars {
            env.vars
                .insert((*k).to_owned(), SecretString::from((*v).to_owned()));
        }
        let app = App::build_with(&config, &env, registry)
            .unwrap_or_else(|e| panic!("gateway build: {e}"))
            .spawn_local()
            .await
            .expect("gateway listens");
        let client = Client::new(&app.url(), Some(TEST_KEY));
        TestGateway {
            app,
            client,
            usage_db,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.app.url()
    }

    /// Graceful shutdown (usage records are all written when it returns).
    pub async fn shutdown(self) -> std::path::PathBuf {
        self.app.shutdown().await;
        // Keep the folder: the caller reads the database afterwards.
        let dir = self._dir.keep();
        let _ = dir;
        self.usage_db
    }
}

/// A config with one OpenAI-compatible provider `name` at `url` serving `models`
/// (`"*"` passes everything), with the key `sk-upstream`.
pub fn openai_provider(name: &str, url: &str, models: &str) -> String {
    format!(
        "  {name}:\n    adapter: openai\n    base_url: \"{url}/v1\"\n    api_key: sk-upstream-{name}\n    models:\n{models}"
    )
}

/// A whole config with these providers (each from [`openai_provider`]).
pub fn config_with(providers: &[String]) -> String {
    format!("providers:\n{}\n", providers.join("\n"))
}
