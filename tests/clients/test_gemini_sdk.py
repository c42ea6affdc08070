"""The official OpenAI Python SDK against a Gemini provider (adapter: gemini) behind a running
llm-bridge; run.sh points it at the mock upstream, which answers Google's native API."""

import json
import os
import unittest

import openai
from openai import OpenAI

URL = os.environ["LLM_BRIDGE_URL"] + "/v1"
KEY = os.environ["LLM_BRIDGE_KEY"]
MODEL = "gemini/gemini-2.5-flash"
# The signature the mock's Gemini echo puts on the function calls it makes.
ECHO_SIGNATURE = "ZWNoby1zaWduYXR1cmU="

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def client():
    return OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)


class GeminiSdk(unittest.TestCase):
    def test_chat(self):
        answer = client().chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello gemini"},
            ],
        )
        self.assertEqual(answer.object, "chat.completion")
        self.assertEqual(answer.model, "gemini-2.5-flash")
        self.assertEqual(answer.choices[0].message.role, "assistant")
        self.assertEqual(answer.choices[0].message.content, "echo: hello gemini")
        self.assertEqual(answer.choices[0].finish_reason, "stop")
        self.assertEqual(answer.usage.prompt_tokens, 11)
        self.assertEqual(answer.usage.completion_tokens, 7)
        self.assertEqual(answer.usage.total_tokens, 18)

    def test_stream(self):
        stream = client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream from gemini"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, "echo: stream from gemini")
        self.assertEqual(len({c.id for c in chunks}), 1)
        self.assertEqual(chunks[-2].choices[0].finish_reason, "stop")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.prompt_tokens, 11)
        self.assertEqual(chunks[-1].usage.total_tokens, 18)

    def test_stream_without_usage(self):
        chunks = list(
            client().chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "no usage"}],
                stream=True,
            )
        )
        self.assertTrue(all(c.usage is None for c in chunks))
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_reasoning_content(self):
        answer = client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "why"}],
            reasoning_effort="low",
        )
        message = answer.choices[0].message
        self.assertEqual(message.content, "echo: why")
        self.assertEqual(message.model_extra["reasoning_content"], "Thinking about: why")

    def test_tool_round_trip_returns_the_thought_signature(self):
        messages = [{"role": "user", "content": "use the tool please"}]
        first = client().chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        self.assertEqual(first.choices[0].finish_reason, "tool_calls")
        message = first.choices[0].message
        call = message.tool_calls[0]
        self.assertEqual(call.type, "function")
        self.assertEqual(call.function.name, "get_weather")
        self.assertEqual(json.loads(call.function.arguments), {"text": "use the tool please"})
        self.assertTrue(call.id)
        self.assertEqual(
            call.model_extra["extra_content"]["google"]["thought_signature"], ECHO_SIGNATURE
        )
        # The usual client loop: append the assistant message as received, then the result.
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'})
        second = client().chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        self.assertEqual(
            second.choices[0].message.content,
            'echo: get_weather returned {"temp":21}; signature returned',
        )
        self.assertEqual(second.choices[0].finish_reason, "stop")

    def test_streamed_tool_call(self):
        chunks = list(
            client().chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "stream a tool call"}],
                tools=TOOLS,
                stream=True,
            )
        )
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].index, 0)
        self.assertEqual(calls[0].function.name, "get_weather")
        self.assertEqual(chunks[-1].choices[0].finish_reason, "tool_calls")

    def test_images(self):
        answer = client().chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                    ],
                }
            ],
        )
        self.assertEqual(answer.choices[0].message.content, "echo: describe")
        with self.assertRaises(openai.BadRequestError) as caught:
            client().chat.completions.create(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                        ],
                    }
                ],
            )
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.param, "messages[0].content[0].image_url.url")

    def test_json_mode(self):
        answer = client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "json please"}],
            response_format={"type": "json_object"},
        )
        self.assertEqual(answer.choices[0].message.content, "echo: json please")

    def test_unsupported_parameter_is_a_clear_400(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "x"}],
                logprobs=True,
            )
        self.assertEqual(caught.exception.param, "logprobs")


if __name__ == "__main__":
    unittest.main()
