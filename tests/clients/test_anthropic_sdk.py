"""The official Anthropic Python SDK against a running llm-bridge (started by run.sh), on
`/v1/messages` translated to an OpenAI-compatible upstream (`mock`, the echo mock; `script`,
the scripted mock that asks for tools) and passed through to an Anthropic upstream
(`claude`, the scripted mock speaking Messages)."""

import json
import os
import unittest

import anthropic
from anthropic import Anthropic

URL = os.environ["LLM_BRIDGE_URL"]
KEY = os.environ["LLM_BRIDGE_KEY"]
PASS_THROUGH = os.environ.get("LLM_BRIDGE_ANTHROPIC_PROVIDER")


def client(key=KEY):
    return Anthropic(base_url=URL, api_key=key, max_retries=0, timeout=30)


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
BASH = {
    "name": "Bash",
    "description": "Runs a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


class AnthropicSdkTranslated(unittest.TestCase):
    def test_create(self):
        message = client().messages.create(
            model="mock/gpt-4o",
            max_tokens=64,
            system="be brief",
            messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
        )
        self.assertEqual(message.type, "message")
        self.assertEqual(message.role, "assistant")
        self.assertEqual(message.content[0].type, "text")
        self.assertEqual(message.content[0].text, "echo: hello from the anthropic sdk")
        self.assertEqual(message.stop_reason, "end_turn")
        self.assertEqual(message.usage.input_tokens, 11)
        self.assertEqual(message.usage.output_tokens, 7)

    def test_stream(self):
        with client().messages.stream(
            model="mock/gpt-4o",
            max_tokens=64,
            messages=[{"role": "user", "content": "stream please"}],
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        self.assertEqual(text, "echo: stream please")
        self.assertEqual(final.stop_reason, "end_turn")
        self.assertEqual(final.usage.output_tokens, 7)

    def test_tool_round_trip(self):
        first = client().messages.create(
            model="script/m",
            max_tokens=64,
            tools=[BASH, WEATHER],
            messages=[{"role": "user", "content": "please run-bash"}],
        )
        self.assertEqual(first.stop_reason, "tool_use")
        call = [b for b in first.content if b.type == "tool_use"][0]
        self.assertEqual(call.name, "Bash")
        self.assertEqual(call.input["command"], "echo llm-bridge-ok")
        second = client().messages.create(
            model="script/m",
            max_tokens=64,
            tools=[BASH, WEATHER],
            messages=[
                {"role": "user", "content": "please run-bash"},
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "llm-bridge-ok"}]},
            ],
        )
        self.assertEqual(second.content[0].text, "The command printed: llm-bridge-ok")

    def test_streamed_tool_call(self):
        with client().messages.stream(
            model="script/m",
            max_tokens=64,
            tools=[BASH],
            messages=[{"role": "user", "content": "please run-bash"}],
        ) as stream:
            final = stream.get_final_message()
        self.assertEqual(final.stop_reason, "tool_use")
        self.assertEqual(final.content[-1].input, {"command": "echo llm-bridge-ok", "description": "Print a marker"})

    def test_count_tokens(self):
        counted = client().messages.count_tokens(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": "how many tokens is this sentence?"}],
        )
        self.assertGreater(counted.input_tokens, 3)

    def test_errors(self):
        with self.assertRaises(anthropic.AuthenticationError) as caught:
            client("sk-wrong").messages.create(
                model="mock/gpt-4o", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        self.assertEqual(caught.exception.body["error"]["type"], "authentication_error")
        with self.assertRaises(anthropic.NotFoundError) as caught:
            client().messages.create(
                model="nobody/nothing", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        self.assertEqual(caught.exception.body["error"]["type"], "not_found_error")
        with self.assertRaises(anthropic.BadRequestError):
            client().messages.create(model="mock/gpt-4o", max_tokens=8, messages="not a list")
        with self.assertRaises(anthropic.InternalServerError) as caught:
            client().messages.create(
                model="dead/gpt-4o", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        self.assertEqual(caught.exception.status_code, 502)
        self.assertEqual(caught.exception.body["type"], "error")


def upstream_requests():
    """What the scripted upstream received so far (one JSON object per request)."""
    with open(os.environ["LLM_BRIDGE_SCRIPT_LOG"]) as f:
        return [json.loads(line) for line in f if line.strip()]


class AnthropicSdkPassThrough(unittest.TestCase):
    """`claude/...` is an `adapter: anthropic` provider: bodies and events pass through."""

    MODEL = "claude/claude-sonnet-4-5"

    def test_create(self):
        message = client().messages.create(
            model=self.MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
        self.assertEqual(message.content[0].text, "llm-bridge says hi")
        self.assertEqual(message.model, "claude-sonnet-4-5", "the upstream's answer, unaltered")
        self.assertEqual(message.usage.input_tokens, 20)
        sent = upstream_requests()[-1]
        self.assertEqual(sent["path"], "/v1/messages")
        self.assertEqual(sent["body"]["model"], "claude-sonnet-4-5")
        self.assertEqual(sent["headers"].get("x-api-key") or sent["headers"].get("X-Api-Key"),
                         "sk-ant-script-upstream-secret")

    def test_stream(self):
        with client().messages.stream(
            model=self.MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        self.assertEqual(text, "llm-bridge says hi")
        self.assertEqual(final.usage.output_tokens, 5)

    def test_tools(self):
        first = client().messages.create(
            model=self.MODEL, max_tokens=64, tools=[BASH],
            messages=[{"role": "user", "content": "please run-bash"}])
        call = [b for b in first.content if b.type == "tool_use"][0]
        second = client().messages.create(
            model=self.MODEL, max_tokens=64, tools=[BASH],
            messages=[
                {"role": "user", "content": "please run-bash"},
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "llm-bridge-ok"}]},
            ])
        self.assertEqual(second.content[0].text, "The command printed: llm-bridge-ok")

    def test_thinking_signature_round_trip(self):
        thinking = {"type": "enabled", "budget_tokens": 1024}
        with client().messages.stream(
            model=self.MODEL, max_tokens=2048, thinking=thinking, tools=[BASH],
            messages=[{"role": "user", "content": "please run-bash"}],
        ) as stream:
            first = stream.get_final_message()
        self.assertEqual(first.content[0].type, "thinking")
        signature = first.content[0].signature
        call = first.content[1]
        client().messages.create(
            model=self.MODEL, max_tokens=2048, thinking=thinking, tools=[BASH],
            messages=[
                {"role": "user", "content": "please run-bash"},
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "llm-bridge-ok"}]},
            ])
        sent = upstream_requests()[-1]["body"]["messages"][1]["content"][0]
        self.assertEqual(sent["type"], "thinking")
        self.assertEqual(sent["signature"], signature)
        self.assertEqual(signature, "EqQBCgYIAhgCIkD+llm/bridge==sig")

    def test_count_tokens(self):
        counted = client().messages.count_tokens(
            model=self.MODEL, messages=[{"role": "user", "content": "x"}])
        self.assertEqual(counted.input_tokens, 42, "counted by the Anthropic upstream")

    def test_upstream_error_keeps_its_type_and_message(self):
        with self.assertRaises(anthropic.BadRequestError) as caught:
            client().messages.create(
                model=self.MODEL, max_tokens=8, messages=[{"role": "user", "content": "fail-400"}])
        self.assertEqual(caught.exception.body["error"]["type"], "invalid_request_error")
        self.assertIn("fail-400", caught.exception.body["error"]["message"])


if __name__ == "__main__":
    unittest.main()
