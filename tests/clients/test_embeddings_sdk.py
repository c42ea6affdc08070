"""The official OpenAI Python SDK's `client.embeddings.create` against a running llm-bridge:
passed through to an OpenAI-compatible upstream (the mock), and translated to Gemini's
`batchEmbedContents` (the mock speaks Google's API too). The mock computes each vector from its
text (tests/src/embeddings.rs, `vector`), so the expected numbers are known here."""

import base64
import os
import struct
import unittest

import openai
from openai import OpenAI

URL = os.environ["LLM_BRIDGE_URL"] + "/v1"
KEY = os.environ["LLM_BRIDGE_KEY"]
TEXTS = ["the quick brown fox", "jumps over the lazy dog!"]


def vector(text, dims=8):
    """The mock upstream's embedding of `text` (multiples of 1/16, exact in f32)."""
    return [((len(text) + j) % 16) / 16.0 - 0.5 for j in range(dims)]


def client():
    return OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)


class EmbeddingsSdk(unittest.TestCase):
    def check(self, answer, dims, texts=TEXTS):
        self.assertEqual(answer.object, "list")
        self.assertEqual(len(answer.data), len(texts))
        for i, (item, text) in enumerate(zip(answer.data, texts)):
            self.assertEqual(item.object, "embedding")
            self.assertEqual(item.index, i)
            self.assertEqual(item.embedding, vector(text, dims))

    def test_openai_default_is_base64_decoded_by_the_sdk(self):
        # Without encoding_format the SDK asks for base64 and decodes it itself.
        answer = client().embeddings.create(model="mock/text-embedding-3-small", input=TEXTS)
        self.check(answer, 8)
        self.assertEqual(answer.model, "text-embedding-3-small")
        self.assertEqual(answer.usage.prompt_tokens, 9)
        self.assertEqual(answer.usage.total_tokens, 9)

    def test_openai_float_and_dimensions(self):
        answer = client().embeddings.create(
            model="mock/text-embedding-3-small",
            input="one string",
            encoding_format="float",
            dimensions=4,
            user="user-1",
        )
        self.check(answer, 4, ["one string"])

    def test_openai_raw_base64(self):
        raw = client().embeddings.with_raw_response.create(
            model="mock/text-embedding-3-small", input=TEXTS, encoding_format="base64"
        )
        body = raw.http_response.json()
        floats = struct.unpack("<8f", base64.b64decode(body["data"][1]["embedding"]))
        self.assertEqual(list(floats), vector(TEXTS[1]))

    def test_gemini_float_base64_and_dimensions(self):
        answer = client().embeddings.create(
            model="gemini/gemini-embedding-2",
            input=TEXTS,
            encoding_format="float",
            dimensions=16,
        )
        self.check(answer, 16)
        self.assertEqual(answer.model, "gemini-embedding-2")
        self.assertEqual(answer.usage.prompt_tokens, 9)
        # The SDK's default: base64, encoded by the gateway from Gemini's numbers.
        answer = client().embeddings.create(model="gemini/gemini-embedding-2", input=TEXTS, dimensions=12)
        self.check(answer, 12)

    def test_gemini_without_usage_gets_an_estimate(self):
        answer = client().embeddings.create(model="gemini/gemini-embedding-001", input="hello world")
        self.check(answer, 8, ["hello world"])
        self.assertGreater(answer.usage.prompt_tokens, 0)

    def test_a_chat_model_is_refused(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().embeddings.create(model="gemini/gemini-2.5-flash", input="x")
        self.assertIn("gemini/gemini-2.5-flash", caught.exception.message)


if __name__ == "__main__":
    unittest.main()
