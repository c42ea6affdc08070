"""The official OpenAI Python SDK's Responses API against a running llm-bridge (started by
run.sh): translated to chat-completions upstreams (`mock`, the echo mock; `script`, the
scripted mock that asks for tools) and passed through to an upstream that speaks Responses
(`native`, the scripted mock with `responses: native`)."""

import json
import os
import unittest

import openai
from openai import OpenAI

URL = os.environ["LLM_BRIDGE_URL"] + "/v1"
KEY = os.environ["LLM_BRIDGE_KEY"]

TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}


def client(key=KEY):
    return OpenAI(base_url=URL, api_key=key, max_retries=0, timeout=30)


def upstream_requests():
    with open(os.environ["LLM_BRIDGE_SCRIPT_LOG"]) as f:
        return [json.loads(line) for line in f if line.strip()]


class ResponsesSdkTranslated(unittest.TestCase):
    def test_create(self):
        response = client().responses.create(
            model="mock/gpt-4o", instructions="be brief", input="hello responses")
        self.assertEqual(response.status, "completed")
        self.assertEqual(response.output_text, "echo: hello responses")
        self.assertEqual(response.usage.input_tokens, 11)
        self.assertEqual(response.usage.output_tokens, 7)
        self.assertEqual(response.instructions, "be brief")

    def test_stream(self):
        events = list(client().responses.create(model="mock/gpt-4o", input="stream it", stream=True))
        kinds = [e.type for e in events]
        self.assertEqual(kinds[0], "response.created")
        self.assertEqual(kinds[-1], "response.completed")
        numbers = [e.sequence_number for e in events]
        self.assertEqual(numbers, list(range(len(events))))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(text, "echo: stream it")
        self.assertEqual(events[-1].response.output_text, "echo: stream it")

    def test_tools_with_function_call_output(self):
        first = client().responses.create(
            model="script/m", tools=[TOOL], input="please run-bash")
        calls = [o for o in first.output if o.type == "function_call"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].name, "exec_command")
        self.assertEqual(json.loads(calls[0].arguments), {"cmd": "echo llm-bridge-ok"})
        second = client().responses.create(
            model="script/m", tools=[TOOL],
            input=[
                {"role": "user", "content": "please run-bash"},
                {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name,
                 "arguments": calls[0].arguments},
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "llm-bridge-ok"},
            ])
        self.assertEqual(second.output_text, "The command printed: llm-bridge-ok")
        sent = upstream_requests()[-1]["body"]
        self.assertEqual(sent["messages"][-1]["role"], "tool")
        self.assertEqual(sent["messages"][-1]["tool_call_id"], calls[0].call_id)

    def test_structured_output_reaches_the_upstream_as_a_json_schema(self):
        schema = {"type": "object", "properties": {"answer": {"type": "string"}},
                  "required": ["answer"], "additionalProperties": False}
        client().responses.create(
            model="script/m", input="hello",
            text={"format": {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}})
        sent = upstream_requests()[-1]["body"]
        self.assertEqual(sent["response_format"]["type"], "json_schema")
        self.assertEqual(sent["response_format"]["json_schema"]["schema"], schema)

    def test_previous_response_id_retrieve_input_items_and_delete(self):
        first = client().responses.create(model="mock/gpt-4o", input="first turn")
        again = client().responses.retrieve(first.id)
        self.assertEqual(again.output_text, "echo: first turn")
        items = client().responses.input_items.list(first.id)
        self.assertEqual(len(items.data), 1)
        second = client().responses.create(
            model="script/m", input="second turn", previous_response_id=first.id)
        self.assertEqual(second.status, "completed")
        sent = upstream_requests()[-1]["body"]["messages"]
        self.assertEqual([m["role"] for m in sent], ["user", "assistant", "user"])
        self.assertEqual(sent[1]["content"], "echo: first turn")
        client().responses.delete(first.id)
        with self.assertRaises(openai.NotFoundError):
            client().responses.retrieve(first.id)

    def test_errors(self):
        with self.assertRaises(openai.AuthenticationError):
            client("sk-wrong").responses.create(model="mock/gpt-4o", input="x")
        with self.assertRaises(openai.NotFoundError) as caught:
            client().responses.create(model="nobody/nothing", input="x")
        self.assertEqual(caught.exception.body["code"], "model_not_found")


class ResponsesSdkNative(unittest.TestCase):
    def test_create_passes_through(self):
        response = client().responses.create(model="native/gpt-5", input="hello", store=False)
        self.assertEqual(response.output_text, "llm-bridge says hi")
        self.assertEqual(response.id, "resp_mock1", "the upstream's answer, unaltered")
        sent = upstream_requests()[-1]
        self.assertEqual(sent["path"], "/v1/responses")
        self.assertEqual(sent["body"]["model"], "gpt-5")
        self.assertIs(sent["body"]["store"], False)

    def test_stream_passes_through(self):
        events = list(client().responses.create(model="native/gpt-5", input="please run-bash",
                                                tools=[TOOL], stream=True))
        self.assertEqual(events[-1].type, "response.completed")
        item = events[-1].response.output[0]
        self.assertEqual(item.type, "function_call")
        self.assertEqual(item.name, "exec_command")


def one_turn(connection):
    """The events of one turn, up to its last (or an error)."""
    events = []
    for event in connection:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
            return events
    raise AssertionError("the connection closed before the turn ended")


class ResponsesSdkWebSocket(unittest.TestCase):
    """`client.responses.connect()`: Responses over a WebSocket on /v1/responses."""

    def test_turns_on_one_connection_continue_the_last_answer(self):
        with client().responses.connect() as connection:
            connection.response.create(model="script/m", instructions="be brief",
                                       input="Say hi", store=False)
            events = one_turn(connection)
            self.assertEqual(events[0].type, "response.created")
            self.assertEqual(events[-1].type, "response.completed")
            self.assertEqual([e.sequence_number for e in events], list(range(len(events))))
            first = events[-1].response
            self.assertEqual(first.output_text.strip(), "llm-bridge says hi")

            # Nothing is stored (store: False), yet the connection continues its last answer.
            connection.response.create(model="script/m", input="Say hi once more",
                                       previous_response_id=first.id, store=False)
            events = one_turn(connection)
            self.assertEqual(events[-1].type, "response.completed")
            sent = upstream_requests()[-1]["body"]
            said = [m.get("content", "").strip() for m in sent["messages"]]
            # Instructions are not carried over from the earlier turn (as OpenAI documents).
            self.assertEqual(said, ["Say hi", "llm-bridge says hi", "Say hi once more"])

            # A refused turn is an error frame; the connection stays for the next.
            connection.response.create(model="nobody/nothing", input="x")
            events = one_turn(connection)
            self.assertEqual(events[-1].type, "error")
            connection.response.create(model="mock/gpt-4o", input="still here")
            events = one_turn(connection)
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            self.assertEqual(text, "echo: still here")

    def test_a_wrong_key_is_refused_before_the_connection_opens(self):
        import websockets.exceptions
        with self.assertRaises(websockets.exceptions.InvalidStatus) as caught:
            with client("sk-wrong").responses.connect(max_retries=0) as connection:
                connection.response.create(model="mock/gpt-4o", input="x")
                one_turn(connection)
        self.assertEqual(caught.exception.response.status_code, 401)


if __name__ == "__main__":
    unittest.main()
