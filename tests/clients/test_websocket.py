"""The `websockets` library against a running llm-bridge's /v1/ws (started by run.sh)."""

import asyncio
import json
import os
import unittest

from websockets.asyncio.client import connect

WS_URL = os.environ["LLM_BRIDGE_URL"].replace("http://", "ws://") + "/v1/ws"
KEY = os.environ["LLM_BRIDGE_KEY"]


async def frames_until_end(ws, request_id):
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        if frame.get("id") != request_id:
            continue
        frames.append(frame)
        if frame["type"] in ("done", "completion", "error"):
            return frames


class WebSocketClient(unittest.TestCase):
    def test_chat_stream_in_the_seed_form(self):
        async def run():
            async with connect(WS_URL) as ws:
                await ws.send(json.dumps({
                    "type": "chat",
                    "id": "py-1",
                    "api_key": KEY,
                    "payload": {"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "from python"}]},
                }))
                return await frames_until_end(ws, "py-1")

        frames = asyncio.run(run())
        text = "".join(
            f["data"]["choices"][0]["delta"].get("content") or ""
            for f in frames
            if f["type"] == "chunk" and f["data"]["choices"]
        )
        self.assertEqual(text, "echo: from python")
        self.assertEqual(frames[-1]["type"], "done")
        self.assertEqual(frames[-1]["usage"]["total_tokens"], 18)

    def test_errors_arrive_as_error_frames_and_the_connection_stays(self):
        async def run():
            async with connect(WS_URL, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
                await ws.send(json.dumps({
                    "type": "chat",
                    "id": "py-2",
                    "payload": {"model": "nobody/gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                }))
                error = await frames_until_end(ws, "py-2")
                await ws.send(json.dumps({"type": "ping", "id": "p"}))
                pong = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                return error, pong

        error, pong = asyncio.run(run())
        self.assertEqual(error[-1]["type"], "error")
        self.assertEqual(error[-1]["error"]["status"], 404)
        self.assertEqual(error[-1]["error"]["code"], "model_not_found")
        self.assertEqual(pong, {"type": "pong", "id": "p"})


if __name__ == "__main__":
    unittest.main()
