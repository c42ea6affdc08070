"""Google's GenAI Python SDK (google-genai, pinned) against llm-bridge's Gemini front
(/v1beta/models/{model}:{method}): through a `gemini` provider (forwarded as bytes to the
mock's Google-style API) and through an OpenAI-compatible provider (translated both ways).
The mock echoes the last user text, counts words for countTokens, and computes each vector
from its text (tests/src/embeddings.rs, `vector`)."""

import json
import os
import unittest
import urllib.error
import urllib.request

from google import genai
from google.genai import errors, types

URL = os.environ["LLM_BRIDGE_URL"]
KEY = os.environ["LLM_BRIDGE_KEY"]
NATIVE = "gemini/gemini-2.5-flash"  # adapter: gemini -> bytes through
TRANSLATED = "mock/gpt-4o"  # adapter: openai -> translated


def vector(text, dims=8):
    return [((len(text) + j) % 16) / 16.0 - 0.5 for j in range(dims)]


def client():
    return genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(base_url=URL, timeout=30_000),
    )


class GoogleGenAiSdk(unittest.TestCase):
    def setUp(self):
        # Kept for the whole test: a client that is dropped closes its connection pool.
        self.client = client()
    def generate(self, model):
        answer = self.client.models.generate_content(
            model=model,
            contents="hello gemini",
            config=types.GenerateContentConfig(
                system_instruction="be brief", temperature=0.2, max_output_tokens=100
            ),
        )
        self.assertEqual(answer.text, "echo: hello gemini")
        self.assertEqual(answer.candidates[0].finish_reason, types.FinishReason.STOP)
        self.assertEqual(answer.usage_metadata.prompt_token_count, 11)
        self.assertEqual(answer.usage_metadata.candidates_token_count, 7)

    def test_generate_native(self):
        self.generate(NATIVE)

    def test_generate_translated(self):
        self.generate(TRANSLATED)

    def stream(self, model):
        chunks = list(
            self.client.models.generate_content_stream(model=model, contents="stream please")
        )
        self.assertGreater(len(chunks), 1)
        text = "".join(c.text or "" for c in chunks)
        self.assertEqual(text, "echo: stream please")
        self.assertEqual(chunks[-1].candidates[0].finish_reason, types.FinishReason.STOP)
        self.assertEqual(chunks[-1].usage_metadata.prompt_token_count, 11)

    def test_stream_native(self):
        self.stream(NATIVE)

    def test_stream_translated(self):
        self.stream(TRANSLATED)

    def test_count_tokens(self):
        # The Gemini upstream counts (the mock: words); the gateway estimates for the others.
        native = self.client.models.count_tokens(model=NATIVE, contents="one two three")
        self.assertEqual(native.total_tokens, 3)
        translated = self.client.models.count_tokens(model=TRANSLATED, contents="one two three")
        self.assertGreater(translated.total_tokens, 0)

    def embed(self, model):
        texts = ["first text", "a second, longer text"]
        answer = self.client.models.embed_content(
            model=model,
            contents=texts,
            config=types.EmbedContentConfig(output_dimensionality=4, task_type="RETRIEVAL_DOCUMENT"),
        )
        self.assertEqual([e.values for e in answer.embeddings], [vector(t, 4) for t in texts])

    def test_embed_through_gemini(self):
        self.embed("gemini/gemini-embedding-001")

    def test_embed_through_openai(self):
        self.embed("mock/text-embedding-3-small")

    def test_errors_in_gemini_shape(self):
        with self.assertRaises(errors.ClientError) as caught:
            self.client.models.generate_content(model="gemini/no-such-model", contents="x")
        self.assertEqual(caught.exception.code, 404)
        self.assertEqual(caught.exception.status, "NOT_FOUND")
        bad = genai.Client(api_key="not-a-key", http_options=types.HttpOptions(base_url=URL))
        with self.assertRaises(errors.ClientError) as caught:
            bad.models.generate_content(model=NATIVE, contents="x")
        self.assertEqual(caught.exception.status, "UNAUTHENTICATED")
        self.assertEqual(caught.exception.code, 401)

    def test_models(self):
        model = self.client.models.get(model=NATIVE)
        self.assertEqual(model.name, "models/" + NATIVE)
        self.assertIn("generateContent", model.supported_actions)

    def test_key_in_the_query(self):
        # Google's REST samples put the key in `?key=`; run.sh checks it is never logged.
        request = urllib.request.Request(
            f"{URL}/v1beta/models/{TRANSLATED}:generateContent?key={KEY}",
            data=json.dumps({"contents": [{"parts": [{"text": "by query"}]}]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.load(answer)
        self.assertEqual(body["candidates"][0]["content"]["parts"][0]["text"], "echo: by query")


if __name__ == "__main__":
    unittest.main()
