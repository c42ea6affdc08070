//! A PostgreSQL database of a test's own, on the server named by
//! `LLM_BRIDGE_TEST_POSTGRES_URL` (e.g. `postgres://root@127.0.0.1:5432/test`): created
//! empty, dropped when the test ends, so runs never see each other's rows or notifications.
//! Without the variable (a fresh machine with no PostgreSQL) tests print a notice and pass;
//! `.ci/run` sets it, and a set but unreachable server fails the test.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the test server.
pub const TEST_URL_VAR: &str = "LLM_BRIDGE_TEST_POSTGRES_URL";

/// A database created for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    server: String,
}

impl TestDatabase {
    /// A new empty database, or `None` (after a notice) when no test server is configured.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let Ok(server) = std::env::var(TEST_URL_VAR) else {
            eprintln!(
                "notice: {TEST_URL_VAR} is not set: the PostgreSQL half of '{test}' is skipped"
            );
            return None;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "llmb_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        execute(&server, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{TEST_URL_VAR}={server}: cannot create a database: {e}"));
        Some(TestDatabase {
            url: with_database(&server, &name),
            name,
            server,
        })
    }

    /// Runs SQL statements in this database (to look at or tamper with what the stores wrote).
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        execute(&self.url, sql)
    }

    /// The first column of the first row of a query, as text.
    pub fn query_text(&self, sql: &str) -> Result<Option<String>, String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        on_own_runtime(move |rt| {
            rt.block_on(async move {
                let client = connect(&url).await?;
                let row = client
                    .query_opt(&sql, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
            })
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = execute(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..host_end])
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    tokio::spawn(connection);
    Ok(client)
}

fn execute(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    on_own_runtime(move |rt| {
        rt.block_on(async move {
            let client = connect(&url).await?;
            client.batch_execute(&sql).await.map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            })
        })
    })
}

/// Runs `f` on a thread with a runtime of its own: callable from sync and async tests alike.
fn on_own_runtime<T: Send + 'static>(
    f: impl FnOnce(&tokio::runtime::Runtime) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        f(&rt)
    })
    .join()
    .map_err(|_| "the PostgreSQL helper thread panicked".to_owned())?
}
