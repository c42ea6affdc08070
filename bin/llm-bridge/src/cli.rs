//! The command line: `serve` (the default), `check`, `models`, `prices`, `usage`, `keys`,
//! `migrate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::{Args, Parser, Subcommand};
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_gateway::Lanes;

use crate::app::{App, Environment};
use crate::config::{AppConfig, ConfigSource};
use crate::keys_cli::KeysArgs;

/// One OpenAI-compatible gateway for every LLM provider.
#[derive(Debug, Parser)]
#[command(name = "llm-bridge", version = crate::VERSION, about)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "LLM_BRIDGE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the default `serve` command.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Load and validate the config, print what would be served, exit 1 on error.
    Check,
    /// List the models clients can use.
    Models,
    /// The price that applies to each configured model (or to MODEL), and where it comes from.
    Prices(crate::prices_cli::PricesArgs),
    /// Usage totals from the usage database (`--since 7d --by model`).
    Usage(UsageArgs),
    /// Manage API keys in the database (works while the server runs).
    Keys(KeysArgs),
    /// Copy keys, usage records and kept answers from a SQLite file into an empty
    /// PostgreSQL database (`--from data/llm-bridge.db --to postgres://…`).
    Migrate(crate::migrate_cli::MigrateArgs),
}

/// Flags of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (overrides server.port).
    #[arg(long)]
    pub port: Option<u16>,
}

/// The default config path.
pub const DEFAULT_CONFIG: &str = "configs/config.yaml";

impl Cli {
    fn source(&self) -> ConfigSource {
        match &self.config {
            Some(path) => ConfigSource {
                path: path.clone(),
                explicit: true,
            },
            None => ConfigSource {
                path: PathBuf::from(DEFAULT_CONFIG),
                explicit: false,
            },
        }
    }
}

/// Runs the command line. `.env` must already be loaded.
pub fn run(cli: Cli) -> ExitCode {
    let source = cli.source();
    let mut config = match AppConfig::load(&source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Environment::from_process();
    match cli.command {
        None => serve(config, &env, &cli.serve, &source),
        Some(Command::Serve(args)) => serve(config, &env, &args, &source),
        Some(Command::Check) => check(&mut config, &env, &source),
        Some(Command::Models) => models(&config, &env),
        Some(Command::Prices(args)) => crate::prices_cli::run(&config, &args),
        Some(Command::Usage(args)) => usage(&config, &args),
        Some(Command::Keys(args)) => crate::keys_cli::run(&config, args),
        Some(Command::Migrate(args)) => crate::migrate_cli::run(&config, &args),
    }
}

/// Run by each async worker thread after it worked (see [`on_worker_idle`]).
static WORKER_IDLE: OnceLock<fn()> = OnceLock::new();

/// Sets what each async worker thread of `serve` runs after a spell of work, within half a
/// second of it: `main` returns the memory the thread's allocator holds free to the system
/// there, since only the thread that owns it can.
pub fn on_worker_idle(idle: fn()) {
    let _ = WORKER_IDLE.set(idle);
}

/// How often an async worker thread checks whether it worked enough since it last ran
/// [`WORKER_IDLE`] to run it again. [`WORKER_IDLE`] used to run each time the thread went to
/// sleep, which with one request at a time is several times a request: those collections and
/// the purges they set off (and the page faults after) were 3.8 % of a serving thread's
/// samples with one stream at a time, and 6 page faults a stream.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// The work (time busy) since the last check after which a check runs [`WORKER_IDLE`]: about
/// a request's worth, and well above what an idle thread's own checks take (a few µs; 10–40
/// µs in a debug build), so that an idle thread never collects. It was 1 ms counted since the
/// last collection: the connections that close after a load (the idle timeout) are less work
/// than that, and their freed buffers stayed (2.3 MB of empty pages after 5,000 streams).
const WORK_BEFORE_COLLECT: std::time::Duration = std::time::Duration::from_micros(50);

/// Runs [`WORKER_IDLE`] on this runtime's (single) thread at each [`IDLE_CHECK`] that follows
/// [`WORK_BEFORE_COLLECT`] of work: under load, every check; after it, once.
async fn collect_after_work() {
    if let Some(idle) = WORKER_IDLE.get() {
        collect_after_work_every(
            *idle,
            llm_bridge_core::memory::quiet,
            IDLE_CHECK,
            WORK_BEFORE_COLLECT,
        )
        .await;
    }
}

/// How many checks without work after work before the thread gives back all it can
/// ([`llm_bridge_core::memory::quiet`]): by then the writer threads have freed what the
/// burst's requests handed them (usage records, log lines), whose memory is this thread's
/// to give back. [`WORKER_IDLE`] under load returns only what is cheap to find; measured,
/// 30 s after 4 s of 64 connections and 256 streams the allocator still held 4 MB more than
/// at start, and 12 MB after 4,000 held streams.
const QUIET_AFTER_CHECKS: u32 = 3;

/// [`collect_after_work`] with its period and threshold given (the test's are shorter).
async fn collect_after_work_every(
    idle: fn(),
    quiet: fn(),
    check: std::time::Duration,
    work: std::time::Duration,
) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let busy = || metrics.worker_total_busy_duration(0);
    let mut checked_at = busy();
    let mut every = tokio::time::interval(check);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Checks without work left before `quiet`, once work was seen.
    let mut quiet_in = None;
    loop {
        every.tick().await;
        let now = busy();
        if now.saturating_sub(checked_at) >= work {
            idle();
            quiet_in = Some(QUIET_AFTER_CHECKS);
        } else if let Some(left) = quiet_in {
            quiet_in = left.checked_sub(1).filter(|&n| n > 0);
            if quiet_in.is_none() {
                quiet();
            }
        }
        checked_at = now;
    }
}

fn serve(
    mut config: AppConfig,
    env: &Environment,
    args: &ServeArgs,
    source: &ConfigSource,
) -> ExitCode {
    if let Some(host) = &args.host {
        config.server.host = host.clone();
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let _log_guard = match crate::logging::init(&config.logging) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !source.path.exists() {
        tracing::warn!(path = %source.path.display(), "no config file: serving with defaults and environment overrides only");
    }
    // Connections are served by lanes: one thread each, with its own single-threaded
    // runtime (see `llm_bridge_gateway::Lanes`). This thread accepts them and runs the rest.
    let lanes = match LaneThreads::start(config.server.threads()) {
        Ok(lanes) => lanes,
        Err(e) => {
            eprintln!("error: could not start the serving threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handles = lanes.handles.clone();
    let exit = runtime.block_on(async move {
        tokio::spawn(collect_after_work());
        let app = match App::build(&config, env) {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {}: {e}", source.path.display());
                return ExitCode::FAILURE;
            }
        };
        if let Some(key) = app.generated_key() {
            // Printed once, on the console only: never logged.
            eprintln!(
                "\nNo ACCESS_API_KEYS configured: generated an access key for this run only:\n\n    {}\n\nSet ACCESS_API_KEYS (in .env or the environment) to choose your own keys.\n",
                key.expose_secret()
            );
            tracing::warn!("no ACCESS_API_KEYS configured: using a generated key, valid for this run only");
        }
        let listener = match app.bind().await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: cannot listen on {}:{}: {e}",
                    config.server.host, config.server.port
                );
                return ExitCode::FAILURE;
            }
        };
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        tracing::info!(
            address = %addr.map(|a| a.to_string()).unwrap_or_default(),
            version = crate::VERSION,
            providers = config.providers.len(),
            "llm-bridge listening"
        );
        app.serve_on(listener, Lanes::new(handles).map(Arc::new), shutdown_signal())
            .await;
        tracing::info!("llm-bridge stopped");
        ExitCode::SUCCESS
    });
    lanes.stop();
    exit
}

/// The threads behind `serve`'s lanes.
struct LaneThreads {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LaneThreads {
    /// Starts `n` threads, each driving its own single-threaded runtime until stopped.
    fn start(n: usize) -> std::io::Result<LaneThreads> {
        let mut lanes = LaneThreads {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for lane in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            lanes.handles.push(runtime.handle().clone());
            lanes.stops.push(stop);
            lanes.threads.push(
                std::thread::Builder::new()
                    .name(format!("lane-{lane}"))
                    .spawn(move || {
                        // Requests on this thread use the providers' pool number `lane`.
                        llm_bridge_http::set_thread_lane(lane);
                        runtime.block_on(async {
                            let collect = tokio::spawn(collect_after_work());
                            let _ = stopped.await;
                            collect.abort();
                        });
                        // Whatever is left (idle connections to providers) goes; blocking
                        // work still running gets a moment.
                        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                    })?,
            );
        }
        Ok(lanes)
    }

    /// Stops the lanes and waits for their threads.
    fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[allow(clippy::print_stdout)]
fn check(config: &mut AppConfig, env: &Environment, source: &ConfigSource) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _guard = runtime.enter();
    let app = match App::build(config, env) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {}: {e}", source.path.display());
            return ExitCode::FAILURE;
        }
    };
    let origin = if source.path.exists() {
        source.path.display().to_string()
    } else {
        format!("{} (not found: defaults)", source.path.display())
    };
    println!("config: {origin}: ok");
    println!("listen: {}:{}", config.server.host, config.server.port);
    // The database: reachable, and its schema one this build can use.
    let database = &config.usage.database;
    match crate::stores::Stores::new(database).and_then(|s| s.check()) {
        Ok(()) => println!("database: {database}: ok"),
        Err(e) => {
            eprintln!("error: usage.database: {e}");
            return ExitCode::FAILURE;
        }
    }
    match app.generated_key() {
        Some(_) => println!("access keys: none configured (serve would generate one for the run)"),
        None => println!("access keys: configured"),
    }
    for provider in app.gateway().router().providers() {
        let name = provider.name();
        let p = &config.providers[name];
        let keys = match env.var(&llm_bridge_core::api_key_env_var(name)) {
            Some(v) => llm_bridge_core::ApiKeys::from_list(v).keys().len(),
            None => p.api_key.keys().len(),
        };
        println!(
            "provider {name}: adapter {}, {}, {} key(s){}",
            p.adapter,
            p.base_url,
            keys,
            if keys == 0 {
                format!(" (set {})", llm_bridge_core::api_key_env_var(name))
            } else {
                String::new()
            }
        );
        for model in provider.catalog().names() {
            match provider.catalog().price(model) {
                Some(_) => println!("  {name}/{model}"),
                None => println!("  {name}/{model}: {}", crate::prices_cli::NO_PRICE),
            }
        }
        if provider.catalog().has_wildcard() {
            println!("  {name}/* (any other model name is passed through)");
        }
    }
    if let Some(limits) = app.shared_limits() {
        match runtime.block_on(limits.ping()) {
            Ok(()) => println!("limits: redis: reachable"),
            Err(e) => {
                println!("limits: redis: FAILED: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[allow(clippy::print_stdout)]
fn models(config: &AppConfig, env: &Environment) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _guard = runtime.enter();
    match App::build(config, env) {
        Ok(app) => {
            for m in app.gateway().router().models() {
                println!("{}", m.id);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flags of `usage`.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// From this time: a duration back from now (`7d`, `12h`), a date (`2026-11-01`), an
    /// RFC 3339 time or Unix seconds.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Until this time (same forms; default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Group totals by `key`, `model`, `provider`, `day` or `none`.
    #[arg(long, default_value = "model")]
    pub by: String,
    /// Only this key's usage.
    #[arg(long)]
    pub key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The database (a SQLite path or a `postgres://` URL) instead of the config's
    /// `usage.database`.
    #[arg(long)]
    pub database: Option<String>,
}

#[allow(clippy::print_stdout)]
fn usage(config: &AppConfig, args: &UsageArgs) -> ExitCode {
    use llm_bridge_usage::{Database, GroupBy, UsageQuery, time};
    let now = time::now_ms();
    let query = (|| -> Result<UsageQuery, String> {
        Ok(UsageQuery {
            from_ms: time::parse_instant(&args.since, now).map_err(|e| format!("--since: {e}"))?,
            to_ms: match &args.until {
                Some(u) => time::parse_instant(u, now).map_err(|e| format!("--until: {e}"))?,
                None => now + 1,
            },
            group_by: GroupBy::parse(&args.by).map_err(|e| format!("--by: {e}"))?,
            key: args.key.clone(),
        })
    })();
    let query = match query {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let database = args
        .database
        .as_deref()
        .map_or_else(|| config.usage.database.clone(), Database::parse);
    let reader = match crate::stores::Stores::new(&database) {
        Ok(stores) => stores.usage_reader(),
        Err(e) => {
            eprintln!("error: {database}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reader.query(&query) {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.to_table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {database}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    static COLLECTS: AtomicUsize = AtomicUsize::new(0);
    static QUIETS: AtomicUsize = AtomicUsize::new(0);

    fn collect() {
        COLLECTS.fetch_add(1, Ordering::SeqCst);
    }

    fn quiet() {
        QUIETS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_worker_collects_after_work_and_not_while_idle() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A threshold well above what a busy machine's preemptions add to idle checks.
            let work = Duration::from_millis(20);
            tokio::spawn(collect_after_work_every(
                collect,
                quiet,
                Duration::from_millis(40),
                work,
            ));
            // Idle: ten checks, none after work.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(COLLECTS.load(Ordering::SeqCst), 0, "collected while idle");
            assert_eq!(QUIETS.load(Ordering::SeqCst), 0, "gave back while idle");
            // Work: twice the threshold, in a task of its own.
            tokio::spawn(async move {
                let start = Instant::now();
                while start.elapsed() < 2 * work {
                    std::hint::spin_loop();
                }
            });
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(
                COLLECTS.load(Ordering::SeqCst),
                1,
                "one collection after work"
            );
            assert_eq!(
                QUIETS.load(Ordering::SeqCst),
                0,
                "gave back before the writers could free what the work handed them"
            );
            // Idle again: three checks later it gives back all it can, once.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(COLLECTS.load(Ordering::SeqCst), 1, "collected while idle");
            assert_eq!(
                QUIETS.load(Ordering::SeqCst),
                1,
                "gave back once after work"
            );
        });
    }
}
