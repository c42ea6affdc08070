"""The official OpenAI Python SDK against a running llm-bridge (started by run.sh)."""

import os
import unittest

import openai
from openai import OpenAI

URL = os.environ["LLM_BRIDGE_URL"] + "/v1"
KEY = os.environ["LLM_BRIDGE_KEY"]


def client(key=KEY):
    return OpenAI(base_url=URL, api_key=key, max_retries=0, timeout=30)


class OpenAISdk(unittest.TestCase):
    def test_chat(self):
        answer = client().chat.completions.create(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": "hello from the sdk"}],
        )
        self.assertEqual(answer.choices[0].message.content, "echo: hello from the sdk")
        self.assertEqual(answer.choices[0].finish_reason, "stop")
        self.assertEqual(answer.usage.total_tokens, 18)

    def test_stream(self):
        stream = client().chat.completions.create(
            model="mock/any-model-passes",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, "echo: stream please")
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")
        self.assertTrue(all(c.usage is None for c in chunks), "no usage chunk unless asked")

    def test_stream_with_usage(self):
        stream = client().chat.completions.create(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.prompt_tokens, 11)
        self.assertEqual(chunks[-1].usage.completion_tokens, 7)

    def test_models(self):
        ids = [m.id for m in client().models.list()]
        self.assertIn("mock/gpt-4o", ids)
        self.assertIn("dead/gpt-4o", ids)

    def test_wrong_key_is_an_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client("sk-wrong").chat.completions.create(
                model="mock/gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(caught.exception.code, "invalid_api_key")

    def test_unknown_model_is_not_found(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            client().chat.completions.create(
                model="nobody/gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        self.assertEqual(caught.exception.code, "model_not_found")

    def test_unreachable_upstream_is_a_502(self):
        with self.assertRaises(openai.InternalServerError) as caught:
            client().chat.completions.create(
                model="dead/gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        self.assertEqual(caught.exception.status_code, 502)
        self.assertEqual(caught.exception.code, "upstream_error")


if __name__ == "__main__":
    unittest.main()
