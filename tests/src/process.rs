//! Running the real `llm-bridge` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `llm-bridge serve` with its console output captured.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every line it printed on standard error so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// Starts the `llm-bridge` binary at `binary` with `args` in `dir` with extra
    /// environment variables, and waits until it listens (start it with `--port 0`).
    pub fn start(binary: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(dir)
            .env_remove("ACCESS_API_KEYS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn llm-bridge");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().expect("lock").push(line);
            }
        });
        let started = Instant::now();
        loop {
            let found = stderr.lock().expect("lock").iter().find_map(|l| {
                l.contains("llm-bridge listening")
                    .then(|| address_in(l))
                    .flatten()
            });
            if let Some(addr) = found {
                return Spawned {
                    child,
                    addr,
                    stderr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "llm-bridge exited with {status} before listening:\n{}",
                    stderr.lock().expect("lock").join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "llm-bridge did not start listening:\n{}",
                stderr.lock().expect("lock").join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The captured console output.
    pub fn output(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.output());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("llm-bridge did not exit after SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `address=…` (text) or `"address":"…"` (JSON) of a log line.
fn address_in(line: &str) -> Option<SocketAddr> {
    if let Some(i) = line.find("\"address\":\"") {
        let rest = &line[i + "\"address\":\"".len()..];
        return rest[..rest.find('"')?].parse().ok();
    }
    let start = line.find("address=")? + "address=".len();
    let rest = &line[start..];
    let rest = rest.trim_start_matches('"');
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
