"""Checks what the scripted upstream received during one agent run.

usage: check_upstream.py LOG PROVIDER (plain|tools) [MODEL]
- through `chat` the upstream got chat completions; through `claude`, Anthropic Messages with
  the body the agent sent (pass-through keeps `cache_control` and the `anthropic-*` headers);
- a tool loop sends the Bash result back on a second request.
"""

import json
import sys

log, provider, kind = sys.argv[1:4]
model = sys.argv[4] if len(sys.argv) > 4 else "claude-sonnet-4-5"
requests = [json.loads(line) for line in open(log) if line.strip()]
main = [r for r in requests if not r["path"].split("?")[0].endswith("count_tokens")]
problems = []
if not main:
    problems.append("the upstream received no request")
for r in main:
    path = r["path"].split("?")[0]
    if provider == "chat" and path != "/v1/chat/completions":
        problems.append("chat provider got " + path)
    if provider == "claude":
        if path != "/v1/messages":
            problems.append("anthropic provider got " + path)
        headers = {k.lower(): v for k, v in r["headers"].items()}
        if headers.get("x-api-key") != "sk-ant-upstream-secret":
            problems.append("the upstream did not get the provider's key in x-api-key")
        if "anthropic-version" not in headers:
            problems.append("anthropic-version was not forwarded")
    if provider == "openai":
        if path != "/v1/responses":
            problems.append("native Responses provider got " + path)
        headers = {k.lower(): v for k, v in r["headers"].items()}
        if headers.get("authorization") != "Bearer sk-openai-upstream-secret":
            problems.append("the upstream did not get the provider's key")
    if r["body"].get("model") != model:
        problems.append("model not rewritten: %r" % r["body"].get("model"))
bodies = json.dumps([r["body"] for r in main])
if provider == "openai" and "prompt_cache_key" not in bodies:
    problems.append("pass-through lost Codex's prompt_cache_key")
if provider == "claude" and model.startswith("claude") and "cache_control" not in bodies:
    problems.append("pass-through lost the agent's cache_control")
if provider == "chat" and "cache_control" in bodies:
    problems.append("cache_control reached a chat-completions upstream")
if kind == "tools":
    def has_result(r):
        text = json.dumps(r["body"].get("messages", r["body"].get("input", [])))
        return "llm-bridge-ok" in text and (
            "tool_result" in text or '"tool"' in text or "function_call_output" in text)
    if not any(has_result(r) for r in main):
        problems.append("no request carried the Bash tool's result back")
if provider == "claude" and not model.startswith("claude") and kind == "tools":
    # Codex through a translated Anthropic target: the signed thinking came back sealed.
    if "EqQBCgYIAhgCIkD+llm/bridge==sig" not in bodies:
        problems.append("the thinking signature did not come back through encrypted_content")
for p in problems:
    print("upstream check:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
