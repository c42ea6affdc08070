#!/usr/bin/env bash
# Drives a real llm-bridge process with real client libraries (the official OpenAI Python
# SDK, pinned in requirements.txt) against the mock upstream, as a user's program would.
# Installs the clients into a virtualenv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# The whole workspace's binaries, so that every script builds with the same features (no rebuild).
cargo build --quiet --workspace --bins

VENV=$TARGET/clients-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

# shellcheck source=tests/lib.sh
source tests/lib.sh

"$TARGET/debug/mock-upstream" --port-file "$WORK/mock.port" --chunks 5 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
# The scripted upstream of the agent tests: asks for tools, speaks chat and Messages.
"$VENV/bin/python" tests/agents/mock_llm.py --port-file "$WORK/script.port" --log "$WORK/script.jsonl" &
PIDS+=($!)
wait_for_files "$WORK/mock.port" "$WORK/script.port"
MOCK_PORT=$(cat "$WORK/mock.port")
SCRIPT_PORT=$(cat "$WORK/script.port")

cat >"$WORK/config.yaml" <<YAML
providers:
  mock:
    adapter: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    models:
      gpt-4o: { max_tokens: 4096 }
      "*": {}
  gemini:
    adapter: gemini
    base_url: http://127.0.0.1:$MOCK_PORT
    api_key: AIzaSy-gemini-upstream-secret
    models:
      gemini-2.5-flash: {}
      gemini-embedding-001: {}
      gemini-embedding-2: {}
  script:
    adapter: openai
    base_url: http://127.0.0.1:$SCRIPT_PORT/v1
    api_key: sk-script-upstream-secret
    models:
      "*": {}
  claude:
    adapter: anthropic
    base_url: http://127.0.0.1:$SCRIPT_PORT
    api_key: sk-ant-script-upstream-secret
    models:
      "*": {}
  native:
    adapter: openai
    base_url: http://127.0.0.1:$SCRIPT_PORT/v1
    api_key: sk-native-upstream-secret
    responses: native
    models:
      "*": {}
  dead:
    adapter: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-dead-upstream
    models:
      gpt-4o: {}
logging: { format: json, level: debug }
usage: { database: $WORK/usage.db }
YAML

PORT=$(free_port)
KEY=sk-client-test-$RANDOM$RANDOM
ACCESS_API_KEYS=$KEY MOCK_API_KEY=sk-mock-upstream-secret \
    "$TARGET/debug/llm-bridge" --config "$WORK/config.yaml" --port "$PORT" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
"$VENV/bin/python" - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("llm-bridge did not become healthy")
PY

status=0
LLM_BRIDGE_URL=http://127.0.0.1:$PORT LLM_BRIDGE_KEY=$KEY LLM_BRIDGE_SCRIPT_LOG=$WORK/script.jsonl \
    "$VENV/bin/python" -m unittest discover -s tests/clients -p 'test_*.py' -v || status=$?

# No secret may appear in the gateway's logs.
for secret in "$KEY" sk-mock-upstream-secret sk-dead-upstream AIzaSy-gemini-upstream-secret sk-script-upstream-secret sk-ant-script-upstream-secret sk-native-upstream-secret; do
    if grep -q -- "$secret" "$WORK/gateway.log"; then
        echo "FAIL: a secret appears in the gateway log" >&2
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "--- gateway log ---" >&2
    tail -n 50 "$WORK/gateway.log" >&2
fi
exit "$status"
