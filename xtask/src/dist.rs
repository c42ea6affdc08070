//! `cargo xtask dist [--check]`: the release archive, and proof that it works once unpacked.
//!
//! `dist` builds `llm-bridge` with `--locked --profile dist` (release, stripped) and packs
//! `target/archives/llm-bridge-<version>-<target>.tar.gz` (the binary, `configs/config.yaml`,
//! `.env.example`, README, LICENSE, CHANGELOG under one folder) with its `.sha256`.
//!
//! `--check` then verifies the checksum, unpacks the archive into a temp folder and, from
//! there only: `llm-bridge --version` names this version and commit, `llm-bridge check`
//! accepts the packaged config, and the packaged binary serves one plain and one streamed
//! chat completion from a mock upstream (a few lines of std networking below), then shuts
//! down cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{run, workspace_root};

/// The files packed next to the binary, relative to the workspace root.
const PACKED: &[&str] = &[
    "configs/config.yaml",
    ".env.example",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
];

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        other => {
            return Err(format!(
                "dist: unexpected arguments {other:?} (usage: cargo xtask dist [--check])"
            ));
        }
    };
    let root = workspace_root();
    let archive = build(&root)?;
    if check {
        verify(&root, &archive)?;
    }
    Ok(())
}

/// Builds and packs the archive; returns its path.
fn build(root: &Path) -> Result<PathBuf, String> {
    let version = output(
        Command::new(env!("CARGO"))
            .args(["pkgid", "-p", "llm-bridge"])
            .current_dir(root),
    )?
    .rsplit(['@', '#'])
    .next()
    .map(str::trim)
    .map(str::to_owned)
    .ok_or("cargo pkgid printed nothing")?;
    let host = output(Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or("rustc -vV names no host target")?;
    if !output(
        Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(root),
    )?
    .trim()
    .is_empty()
    {
        eprintln!(
            "dist: warning: the working tree has uncommitted changes; the binary names the last commit"
        );
    }

    println!("== cargo build --locked --profile dist -p llm-bridge");
    run(Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--profile",
            "dist",
            "-p",
            "llm-bridge",
            "--bin",
            "llm-bridge",
        ])
        .current_dir(root))?;

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let name = format!("llm-bridge-{version}-{host}");
    let out = target_dir.join("archives");
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("configs"))
        .map_err(|e| format!("{}: {e}", stage.display()))?;
    copy(
        &target_dir.join("dist/llm-bridge"),
        &stage.join("llm-bridge"),
    )?;
    for file in PACKED {
        copy(&root.join(file), &stage.join(file))?;
    }

    // A stable archive: sorted names, no owner, the commit's time as every mtime, gzip
    // without a timestamp; the same commit gives the same bytes (given the same binary).
    let mtime = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root),
    )
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|_| "0".to_owned());
    let archive = out.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{mtime}"))
        .args(["--use-compress-program", "gzip -n -9", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .arg(&name))?;
    let sum = output(
        Command::new("sha256sum")
            .arg(format!("{name}.tar.gz"))
            .current_dir(&out),
    )?;
    let sum_file = out.join(format!("{name}.tar.gz.sha256"));
    std::fs::write(&sum_file, sum).map_err(|e| format!("{}: {e}", sum_file.display()))?;
    let _ = std::fs::remove_dir_all(&stage);
    let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    println!(
        "dist: {} ({:.1} MB) and {}",
        archive.display(),
        size as f64 / 1e6,
        sum_file.display()
    );
    Ok(archive)
}

/// Unpacks the archive into a temp folder and proves the binary there works.
fn verify(root: &Path, archive: &Path) -> Result<(), String> {
    let dir = archive.parent().ok_or("archive has no folder")?;
    let file = archive
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("archive name")?;
    let name = file.trim_end_matches(".tar.gz");
    println!("== dist --check: sha256sum -c, unpack, --version, check, smoke requests");
    run(Command::new("sha256sum")
        .args(["--check", "--quiet", &format!("{file}.sha256")])
        .current_dir(dir))?;

    let temp = std::env::temp_dir().join(format!("llm-bridge-dist-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(&temp).map_err(|e| e.to_string())?;
    let result = verify_in(root, archive, &temp, name);
    let _ = std::fs::remove_dir_all(&temp);
    result?;
    println!("dist --check: ok");
    Ok(())
}

fn verify_in(root: &Path, archive: &Path, temp: &Path, name: &str) -> Result<(), String> {
    run(Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(temp))?;
    let home = temp.join(name);
    for file in PACKED.iter().copied().chain(["llm-bridge"]) {
        if !home.join(file).is_file() {
            return Err(format!("the archive lacks {file}"));
        }
    }
    let bin = home.join("llm-bridge");

    // --version names the version and the commit the archive was built from.
    let version = output(Command::new(&bin).arg("--version"))?;
    let commit = output(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(root),
    )?;
    let expected_version = name
        .trim_start_matches("llm-bridge-")
        .split('-')
        .next()
        .unwrap_or_default();
    if !version.contains(expected_version) || !version.contains(commit.trim()) {
        return Err(format!(
            "--version printed {version:?}; expected {expected_version} and commit {}",
            commit.trim()
        ));
    }
    print!("  {version}");

    // `check` accepts the packaged config as it is, run where a user would run it.
    let checked = Command::new(&bin)
        .arg("check")
        .current_dir(&home)
        .env_remove("LLM_BRIDGE_CONFIG")
        .output()
        .map_err(|e| e.to_string())?;
    if !checked.status.success() {
        return Err(format!(
            "llm-bridge check rejected the packaged config:\n{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        ));
    }
    println!("  llm-bridge check: ok");

    // Serve from the unpacked folder against a mock upstream.
    let mock = MockUpstream::start()?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    drop(listener);
    let config = format!(
        "server: {{ port: {port}, drain_timeout: 5 }}\n\
         providers:\n  mock:\n    adapter: openai\n    base_url: http://127.0.0.1:{}/v1\n    models: {{ small: {{ upstream_model: gpt-4o-mini, max_tokens: 100 }} }}\n\
         logging: {{ format: json, output: {{ console: true }} }}\n",
        mock.port
    );
    std::fs::write(home.join("smoke.yaml"), config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(temp.join("gateway.log")).map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .args(["serve", "--config", "smoke.yaml"])
        .current_dir(&home)
        .env("ACCESS_API_KEYS", "sk-dist-check")
        .env("MOCK_API_KEY", "sk-upstream-dist")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut gateway = Gateway(child);
    let smoke = smoke(port, &mock);
    let stopped = gateway.stop();
    if smoke.is_err() || stopped.is_err() {
        let log = std::fs::read_to_string(temp.join("gateway.log")).unwrap_or_default();
        eprintln!("--- the packaged gateway's log\n{log}");
    }
    smoke?;
    stopped?;
    println!("  SIGTERM: exited cleanly");
    if !home.join("data/llm-bridge.db").is_file() {
        return Err("the gateway wrote no usage database under the unpacked folder".to_owned());
    }
    Ok(())
}

fn smoke(port: u16, mock: &MockUpstream) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http(port, "GET", "/readyz", None, "") {
            Ok((200, _)) => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => {
                return Err(format!(
                    "the packaged gateway never became ready: {other:?}"
                ));
            }
        }
    }

    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some("sk-dist-check"),
        r#"{"model":"mock/small","messages":[{"role":"user","content":"Say hi"}],"max_tokens":500}"#,
    )?;
    if status != 200
        || !body.contains("Hello from the mock")
        || !body.contains("\"prompt_tokens\":9")
    {
        return Err(format!("chat completion: {status} {body}"));
    }
    let seen = mock.requests.lock().map_err(|_| "mock poisoned")?.clone();
    let first = seen.first().ok_or("the mock upstream saw no request")?;
    // Header names arrive in any case.
    let first_lower = first.to_ascii_lowercase();
    for needle in [
        "post /v1/chat/completions ",
        "authorization: bearer sk-upstream-dist",
        "\"model\":\"gpt-4o-mini\"",
        "\"max_tokens\":100",
    ] {
        if !first_lower.contains(needle) {
            return Err(format!("the upstream request lacks {needle:?}:\n{first}"));
        }
    }
    println!(
        "  POST /v1/chat/completions: 200, model rewritten, max_tokens lowered, upstream key sent"
    );

    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some("sk-dist-check"),
        r#"{"model":"mock/small","messages":[{"role":"user","content":"Say hi"}],"stream":true}"#,
    )?;
    if status != 200
        || !body.contains("Hello")
        || !body.contains(" again")
        || body.matches("data: [DONE]").count() != 1
    {
        return Err(format!("streamed chat completion: {status} {body}"));
    }
    println!("  POST /v1/chat/completions (stream): 200, chunks and one [DONE]");

    let (status, body) = http(port, "POST", "/v1/chat/completions", Some("sk-wrong"), "{}")?;
    if status != 401 || !body.contains("\"error\"") {
        return Err(format!("a wrong key: {status} {body}"));
    }
    println!("  a wrong key: 401, OpenAI-shaped error");
    Ok(())
}

/// The packaged gateway; killed if the check fails before it is stopped.
struct Gateway(Child);

impl Gateway {
    /// SIGTERM, then the exit status within the drain timeout.
    fn stop(&mut self) -> Result<(), String> {
        run(Command::new("kill").args(["-TERM", &self.0.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.0.try_wait().map_err(|e| e.to_string())? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the gateway exited with {status} on SIGTERM"))
                };
            }
            if Instant::now() > deadline {
                return Err("the gateway did not exit within 15 s of SIGTERM".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// An OpenAI-like upstream on a std thread: a fixed answer in OpenAI's shape, streamed when
/// asked; every request it sees (head and body) is kept for the check.
struct MockUpstream {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl MockUpstream {
    fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve_upstream(stream, &seen));
            }
        });
        Ok(Self { port, requests })
    }
}

fn serve_upstream(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some((head, body)) = read_message(&mut reader) else {
            return;
        };
        let text = format!("{head}{}", String::from_utf8_lossy(&body));
        let streamed = text.contains("\"stream\":true");
        if let Ok(mut v) = seen.lock() {
            v.push(text);
        }
        let ok = if streamed {
            let mut sse = String::new();
            for (i, piece) in ["Hello", " again"].iter().enumerate() {
                sse.push_str(&format!(
                    "data: {{\"id\":\"chatcmpl-dist\",\"object\":\"chat.completion.chunk\",\"created\":1727346168,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{{}\"content\":\"{piece}\"}},\"finish_reason\":null}}]}}\n\n",
                    if i == 0 { "\"role\":\"assistant\"," } else { "" }
                ));
            }
            sse.push_str("data: {\"id\":\"chatcmpl-dist\",\"object\":\"chat.completion.chunk\",\"created\":1727346168,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\ndata: [DONE]\n\n");
            // Streams end with the connection, as many upstreams do.
            let _ = write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{sse}"
            );
            return;
        } else {
            let answer = r#"{"id":"chatcmpl-dist","object":"chat.completion","created":1727346168,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13},"system_fingerprint":"fp_dist"}"#;
            write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            )
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 message with a Content-Length body; `None` at end of stream.
fn read_message(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// One request to the gateway over a fresh connection; the status and the raw body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

/// A command's standard output, failing if it fails.
fn output(command: &mut Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("could not run {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}
