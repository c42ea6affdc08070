#!/usr/bin/env bash
# The real coding agents against a running llm-bridge, from the npm registry with their
# linux-x64 native binaries, offline:
# - Claude Code through a translated OpenAI-compatible upstream and through an Anthropic
#   upstream (pass-through);
# - Codex through a translated OpenAI-compatible upstream and through a native Responses
#   upstream (pass-through);
# - gemini-cli (GOOGLE_GEMINI_BASE_URL at the gateway) through a Gemini upstream (bytes through)
#   and a translated OpenAI-compatible upstream;
# each for a plain answer and a shell tool loop. The upstream is tests/agents/mock_llm.py; the
# test asserts what the agent printed and what the upstream received.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CLAUDE_CODE_VERSION=2.1.328
CODEX_VERSION=0.169.0
GEMINI_CLI_VERSION=0.61.0

# The whole workspace's binaries, so that every script builds with the same features (no rebuild).
cargo build --quiet --workspace --bins

AGENTS=$TARGET/agents
mkdir -p "$AGENTS"
CLAUDE=$AGENTS/node_modules/@anthropic-ai/claude-code-linux-x64/claude
if [ ! -x "$CLAUDE" ]; then
    (cd "$AGENTS" && npm install --no-audit --no-fund --silent "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION")
fi
"$CLAUDE" --version
CODEX=$AGENTS/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex
if [ ! -x "$CODEX" ]; then
    (cd "$AGENTS" && npm install --no-audit --no-fund --silent "@openai/codex@$CODEX_VERSION")
fi
"$CODEX" --version
GEMINI=$AGENTS/node_modules/.bin/gemini
if [ ! -x "$GEMINI" ] || [ "$("$GEMINI" --version 2>/dev/null)" != "$GEMINI_CLI_VERSION" ]; then
    (cd "$AGENTS" && npm install --no-audit --no-fund --silent "@google/gemini-cli@$GEMINI_CLI_VERSION")
fi
"$GEMINI" --version

# shellcheck source=tests/lib.sh
source tests/lib.sh

python3 tests/agents/mock_llm.py --port-file "$WORK/mock.port" --log "$WORK/upstream.jsonl" &
PIDS+=($!)
wait_for_files "$WORK/mock.port"
MOCK_PORT=$(cat "$WORK/mock.port")

cat >"$WORK/config.yaml" <<YAML
providers:
  chat:
    adapter: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    models:
      "*": {}
  claude:
    adapter: anthropic
    base_url: http://127.0.0.1:$MOCK_PORT
    models:
      "*": {}
  openai:
    adapter: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    responses: native
    models:
      "*": {}
  gem:
    adapter: gemini
    base_url: http://127.0.0.1:$MOCK_PORT
    models:
      "*": {}
logging: { format: json, level: debug }
usage: { database: $WORK/usage.db }
YAML

PORT=$(free_port)
KEY=sk-agent-test-$RANDOM$RANDOM
ACCESS_API_KEYS=$KEY CHAT_API_KEY=sk-chat-upstream-secret CLAUDE_API_KEY=sk-ant-upstream-secret \
    OPENAI_API_KEY=sk-openai-upstream-secret GEM_API_KEY=AIza-gem-upstream-secret \
    "$TARGET/debug/llm-bridge" --config "$WORK/config.yaml" --port "$PORT" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
wait_for_url "http://127.0.0.1:$PORT/healthz"

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# claude -p with a fresh HOME, the gateway as its API, nothing but the API called.
claude_code() {
    local home
    home=$(mktemp -d -p "$WORK")
    HOME=$home ANTHROPIC_BASE_URL="http://127.0.0.1:$PORT" ANTHROPIC_API_KEY=$KEY \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
        timeout 120 "$CLAUDE" -p "$@" </dev/null
}

for provider in chat claude; do
    : >"$WORK/upstream.jsonl"
    echo "== Claude Code through '$provider': a plain answer"
    out=$(cd "$WORK" && claude_code "Say hi" --model "$provider/claude-sonnet-4-5") || fail "claude exited $? ($provider, plain)"
    echo "$out"
    grep -q "llm-bridge says hi" <<<"$out" || fail "Claude Code did not print the answer ($provider)"
    python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" "$provider" plain || fail "upstream check ($provider, plain)"

    : >"$WORK/upstream.jsonl"
    echo "== Claude Code through '$provider': a Bash tool loop"
    out=$(cd "$WORK" && claude_code "Please run-bash and tell me what it printed" \
        --model "$provider/claude-sonnet-4-5" --allowedTools Bash) || fail "claude exited $? ($provider, tools)"
    echo "$out"
    grep -q "The command printed: llm-bridge-ok" <<<"$out" || fail "Claude Code did not print the tool result ($provider)"
    python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" "$provider" tools || fail "upstream check ($provider, tools)"
done

# codex exec with a fresh CODEX_HOME whose config names the gateway as its provider.
codex_exec() {
    local home model=$1
    shift
    home=$(mktemp -d -p "$WORK")
    cat >"$home/config.toml" <<TOML
model = "$model"
model_provider = "llmbridge"
model_reasoning_effort = "high"

[model_providers.llmbridge]
name = "llm-bridge"
base_url = "http://127.0.0.1:$PORT/v1"
wire_api = "responses"
env_key = "LLM_BRIDGE_AGENT_KEY"
TOML
    CODEX_HOME=$home LLM_BRIDGE_AGENT_KEY=$KEY timeout 120 "$CODEX" exec --skip-git-repo-check \
        --color never "$@" </dev/null
}

for provider in chat openai claude; do
    : >"$WORK/upstream.jsonl"
    echo "== Codex through '$provider': a plain answer"
    out=$(cd "$WORK" && codex_exec "$provider/gpt-5" "Say hi") || fail "codex exited $? ($provider, plain)"
    echo "$out"
    grep -q "llm-bridge says hi" <<<"$out" || fail "Codex did not print the answer ($provider)"
    python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" "$provider" plain gpt-5 || fail "upstream check ($provider, plain)"

    : >"$WORK/upstream.jsonl"
    echo "== Codex through '$provider': an exec_command tool loop"
    out=$(cd "$WORK" && codex_exec "$provider/gpt-5" --sandbox danger-full-access \
        "Please run-bash and tell me what it printed") || fail "codex exited $? ($provider, tools)"
    echo "$out"
    grep -q "The command printed: llm-bridge-ok" <<<"$out" || fail "Codex did not print the tool result ($provider)"
    python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" "$provider" tools gpt-5 || fail "upstream check ($provider, tools)"
done

# Codex's built-in OpenAI provider pointed at the gateway (`openai_base_url`) speaks
# Responses over a WebSocket (`GET /v1/responses` upgraded): each turn is one frame, and a
# tool loop's next turn sends only what is new, continuing the connection's last answer.
home=$(mktemp -d -p "$WORK")
printf 'model = "chat/gpt-5"\nopenai_base_url = "http://127.0.0.1:%s/v1"\n' "$PORT" >"$home/config.toml"
echo "$KEY" | CODEX_HOME=$home "$CODEX" login --with-api-key >/dev/null 2>&1 || fail "codex login"
: >"$WORK/upstream.jsonl"
before=$(wc -l <"$WORK/gateway.log")
echo "== Codex's built-in provider at the gateway: a plain answer over a WebSocket"
out=$(cd "$WORK" && CODEX_HOME=$home timeout 120 "$CODEX" exec --skip-git-repo-check --color never \
    "Say hi" </dev/null) || fail "codex exited $? (built-in provider)"
echo "$out"
grep -q "llm-bridge says hi" <<<"$out" || fail "Codex did not print the answer (built-in provider)"
python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" chat plain gpt-5 || fail "upstream check (WebSocket, plain)"

: >"$WORK/upstream.jsonl"
echo "== Codex's built-in provider at the gateway: an exec_command tool loop over a WebSocket"
out=$(cd "$WORK" && CODEX_HOME=$home timeout 120 "$CODEX" exec --skip-git-repo-check --color never \
    --sandbox danger-full-access "Please run-bash and tell me what it printed" </dev/null) \
    || fail "codex exited $? (built-in provider, tools)"
echo "$out"
grep -q "The command printed: llm-bridge-ok" <<<"$out" || fail "Codex did not print the tool result (WebSocket)"
python3 tests/agents/check_upstream.py "$WORK/upstream.jsonl" chat tools gpt-5 || fail "upstream check (WebSocket, tools)"
# Every turn went over the WebSocket: access events of transport ws, none refused with 426.
ws_turns=$(tail -n +"$((before + 1))" "$WORK/gateway.log" | grep -c '"transport":"ws"' || true)
[ "$ws_turns" -ge 3 ] || fail "expected at least 3 turns over the WebSocket, the log shows $ws_turns"
if tail -n +"$((before + 1))" "$WORK/gateway.log" | grep -q '"status":426'; then
    fail "a WebSocket attempt was answered 426"
fi

# gemini -p with a fresh HOME (API-key auth chosen, nothing sent to Google), the gateway as
# its Gemini API: GOOGLE_GEMINI_BASE_URL, the access key as GEMINI_API_KEY.
gemini_cli() {
    local home
    home=$(mktemp -d -p "$WORK")
    mkdir -p "$home/.gemini"
    echo '{"security":{"auth":{"selectedType":"gemini-api-key"}},"privacy":{"usageStatisticsEnabled":false},"telemetry":{"enabled":false}}' \
        >"$home/.gemini/settings.json"
    HOME=$home GEMINI_API_KEY=$KEY GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:$PORT" \
        GEMINI_CLI_TRUST_WORKSPACE=true timeout 120 "$GEMINI" "$@" </dev/null
}

# What the upstream received from gemini-cli: Gemini's streamGenerateContent with the
# provider's key (gem), or a chat completion (chat); with `tools`, the tool loop's result.
gemini_upstream() {
    python3 - "$WORK/upstream.jsonl" "$1" "$2" <<'PY'
import json, sys
log, provider, case = sys.argv[1:]
requests = [json.loads(l) for l in open(log)]
assert requests, "the upstream received nothing"
for r in requests:
    if provider == "gem":
        assert r["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", r["path"]
        assert r["headers"].get("x-goog-api-key") == "AIza-gem-upstream-secret", "not the provider's key"
        assert "contents" in r["body"] and "model" not in r["body"]
    else:
        assert r["path"] == "/v1/chat/completions", r["path"]
        assert r["body"]["model"] == "gemini-2.5-flash" and r["body"]["stream"] is True
        assert r["headers"].get("authorization") == "Bearer sk-chat-upstream-secret"
last = json.dumps(requests[-1]["body"])
if case == "tools":
    assert len(requests) == 2, f"{len(requests)} requests"
    assert "llm-bridge-ok" in last, "the tool's output did not come back"
    assert ("functionResponse" in last) if provider == "gem" else ('"role": "tool"' in last)
else:
    assert "Say hi" in last
PY
}

for provider in gem chat; do
    : >"$WORK/upstream.jsonl"
    echo "== gemini-cli through '$provider': a plain answer"
    out=$(cd "$WORK" && gemini_cli -p "Say hi" -m "$provider/gemini-2.5-flash") || fail "gemini exited $? ($provider, plain)"
    echo "$out"
    grep -q "llm-bridge says hi" <<<"$out" || fail "gemini-cli did not print the answer ($provider)"
    gemini_upstream "$provider" plain || fail "upstream check (gemini-cli, $provider, plain)"

    : >"$WORK/upstream.jsonl"
    echo "== gemini-cli through '$provider': a run_shell_command tool loop"
    out=$(cd "$WORK" && gemini_cli -p "Please run-bash and tell me what it printed" --yolo \
        -m "$provider/gemini-2.5-flash") || fail "gemini exited $? ($provider, tools)"
    echo "$out"
    grep -q "The command printed: llm-bridge-ok" <<<"$out" || fail "gemini-cli did not print the tool result ($provider)"
    gemini_upstream "$provider" tools || fail "upstream check (gemini-cli, $provider, tools)"
done

# No secret in the gateway's log; every request left an access event.
for secret in "$KEY" sk-chat-upstream-secret sk-ant-upstream-secret sk-openai-upstream-secret AIza-gem-upstream-secret; do
    grep -q -- "$secret" "$WORK/gateway.log" && fail "a secret appears in the gateway log"
done
if [ "$failures" -ne 0 ]; then
    echo "--- gateway log (tail)" >&2
    tail -n 40 "$WORK/gateway.log" >&2
    echo "$failures failed" >&2
    exit 1
fi
echo "agents: all passed"
