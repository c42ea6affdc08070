#!/usr/bin/env bash
# The console in a real browser: Debian's chromium driven by playwright-core (pinned, from
# npm, no browser download) against the real llm-bridge binary and the mock upstream.
# Screenshots of every page, 1280 and 375 px wide, go to target/console-screens/.
#
#   bash tests/console/run.sh          (installs chromium with apt-get when it is missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PLAYWRIGHT_CORE_VERSION=1.65.1
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
SCREENS=${CONSOLE_SCREENS:-$ROOT/target/console-screens}

if [ ! -x "$CHROMIUM" ]; then
    echo "chromium is not installed: installing chromium and chromium-driver with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        || [ ! -x "$CHROMIUM" ]; then
        echo "FAILED: chromium could not be installed (apt-get needs root and the Debian mirrors)" >&2
        exit 1
    fi
fi
"$CHROMIUM" --version 2>/dev/null || true

# The whole workspace's binaries, so that every script builds with the same features (no rebuild).
cargo build --quiet --workspace --bins

NODE_DIR=$TARGET/console-node
if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ] \
    || ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$NODE_DIR/node_modules/playwright-core/package.json"; then
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent --no-save "playwright-core@$PLAYWRIGHT_CORE_VERSION")
fi

# shellcheck source=tests/lib.sh
source tests/lib.sh

"$TARGET/debug/mock-upstream" --port-file "$WORK/mock.port" --chunks 3 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_for_files "$WORK/mock.port"
MOCK_PORT=$(cat "$WORK/mock.port")

cat >"$WORK/config.yaml" <<YAML
providers:
  mock:
    adapter: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_key: sk-mock-upstream-secret-0123456789
    models:
      gpt-4o: { max_tokens: 4096 }
      gpt-4o-mini: {}
  backup:
    adapter: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_key: sk-backup-upstream-secret-0123456789
    models:
      gpt-4o: {}
routes:
  smart: { strategy: fallback, targets: [mock/gpt-4o, backup/gpt-4o] }
proxy: { https: "http://proxyuser:proxy-password-secret@127.0.0.1:3128" }
logging: { format: json, level: info }
usage: { database: $WORK/usage.db, flush_interval: 0.1 }
YAML

PORT=$(free_port)
ADMIN_KEY=sk-admin-console-test-$RANDOM$RANDOM
ACCESS_KEY=sk-access-console-test-$RANDOM$RANDOM
ADMIN_API_KEYS=$ADMIN_KEY ACCESS_API_KEYS=$ACCESS_KEY \
    "$TARGET/debug/llm-bridge" --config "$WORK/config.yaml" --port "$PORT" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
wait_for_url "http://127.0.0.1:$PORT/healthz"

mkdir -p "$SCREENS"
status=0
NODE_PATH=$NODE_DIR/node_modules BASE="http://127.0.0.1:$PORT" PORT="$PORT" ADMIN_KEY="$ADMIN_KEY" \
    ACCESS_KEY="$ACCESS_KEY" CHROMIUM="$CHROMIUM" SCREENS="$SCREENS" \
    node tests/console/console.test.cjs || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- gateway log (last 60 lines)" >&2
    tail -n 60 "$WORK/gateway.log" >&2
    exit "$status"
fi
if grep -q -e "$ADMIN_KEY" -e "proxy-password-secret" -e "sk-mock-upstream-secret" "$WORK/gateway.log"; then
    echo "FAILED: a secret appears in the gateway's log" >&2
    exit 1
fi
echo "console browser test: ok (screenshots in $SCREENS)"
