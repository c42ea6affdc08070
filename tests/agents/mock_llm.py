"""A scripted LLM upstream for the real-agent tests: speaks OpenAI chat completions
(`POST /v1/chat/completions`), Anthropic Messages (`POST /v1/messages`) and Gemini
(`POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
`:countTokens`), JSON and SSE.

The script: when the conversation's last turn is a tool result, it answers with text that
quotes the result; when the prompt asks for `run-bash` and a `Bash` tool is offered, it asks
for `Bash` with `echo llm-bridge-ok`; otherwise it answers `llm-bridge says hi`. Every request
is appended as one JSON line to the file named by --log.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
# What the scripted Anthropic upstream signs its thinking with; the next turn must bring it back.
SIGNATURE = "EqQBCgYIAhgCIkD+llm/bridge==sig"

ARGS = None


def text_of(content):
    if isinstance(content, str):
        return content
    out = []
    for part in content or []:
        if isinstance(part, dict):
            if part.get("type") in ("text", "input_text", "output_text"):
                out.append(part.get("text", ""))
            elif part.get("type") == "tool_result":
                out.append(text_of(part.get("content")))
    return "".join(out)


def first_line(text):
    """The marker if the tool output holds it (agents wrap outputs), else its first line."""
    if "llm-bridge-ok" in text:
        return "llm-bridge-ok"
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def decide(messages, tools, tool_names):
    """('text', str) or ('tool', name, input)."""
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return ("text", "The command printed: " + first_line(text_of(last.get("content"))))
    if last.get("role") == "user" and isinstance(last.get("content"), list):
        results = [p for p in last["content"] if isinstance(p, dict) and p.get("type") == "tool_result"]
        if results:
            return ("text", "The command printed: " + first_line(text_of(results[-1].get("content"))))
    prompt = " ".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")
    if "run-bash" in prompt and "Bash" in tool_names:
        return ("tool", "Bash", {"command": "echo llm-bridge-ok", "description": "Print a marker"})
    if "run-bash" in prompt and "exec_command" in tool_names:
        return ("tool", "exec_command", {"cmd": "echo llm-bridge-ok"})
    if "run-bash" in prompt and "run_shell_command" in tool_names:
        return ("tool", "run_shell_command", {"command": "echo llm-bridge-ok"})
    return ("text", "llm-bridge says hi")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply(200, {"object": "list", "data": []})

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        body = json.loads(raw or b"{}")
        with LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body}) + "\n")
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            self.openai(body)
        elif path.endswith("/messages/count_tokens"):
            self.reply(200, {"input_tokens": 42})
        elif path.endswith("/messages"):
            self.anthropic(body)
        elif path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
            self.gemini(body, path.endswith(":streamGenerateContent"), path)
        elif path.endswith(":countTokens"):
            self.reply(200, {"totalTokens": 7})
        elif path.endswith("/responses"):
            self.openai_responses(body)
        else:
            self.reply(404, {"error": {"message": "unknown path " + path}})

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sse(self, events):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events:
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def openai(self, body):
        tools = body.get("tools") or []
        names = {t.get("function", {}).get("name") for t in tools}
        decision = decide(body.get("messages") or [], tools, names)
        usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        if decision[0] == "text":
            message = {"role": "assistant", "content": decision[1]}
            finish = "stop"
        else:
            call = {"id": "call_1", "type": "function",
                    "function": {"name": decision[1], "arguments": json.dumps(decision[2])}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        if not body.get("stream"):
            self.reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                             "model": body.get("model"), "usage": usage,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
            return

        def chunk(delta, finish_reason=None, **extra):
            c = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": body.get("model"),
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            c.update(extra)
            return "data: " + json.dumps(c) + "\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        if decision[0] == "text":
            for word in decision[1].split(" "):
                events.append(chunk({"content": word + " "}))
        else:
            call = message["tool_calls"][0]
            events.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                 "function": {"name": decision[1], "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}))
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append("data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                                 "created": 1, "model": body.get("model"),
                                                 "choices": [], "usage": usage}) + "\n\n")
        events.append("data: [DONE]\n\n")
        self.sse(events)

    def gemini(self, body, stream, path):
        """Google's generateContent / streamGenerateContent?alt=sse."""
        contents = body.get("contents") or []
        messages = []
        for c in contents:
            for p in c.get("parts") or []:
                if "functionResponse" in p:
                    out = p["functionResponse"].get("response")
                    messages.append({"role": "tool", "content": json.dumps(out)})
                elif "text" in p and not p.get("thought"):
                    role = "assistant" if c.get("role") == "model" else "user"
                    messages.append({"role": role, "content": p["text"]})
        names = [
            d.get("name")
            for t in body.get("tools") or []
            for d in t.get("functionDeclarations") or []
        ]
        decision = decide(messages, body.get("tools"), names)
        if decision[0] == "tool":
            part = {"functionCall": {"name": decision[1], "args": decision[2]}}
        else:
            part = {"text": decision[1]}
        model = path.rsplit("/", 1)[-1].split(":")[0]
        usage = {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}
        answer = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                  "usageMetadata": usage, "modelVersion": model}
        if not stream:
            self.reply(200, answer)
            return
        events = []
        if "text" in part:
            first = {"candidates": [{"content": {"role": "model", "parts": [{"text": part["text"][:5]}]}, "index": 0}],
                     "modelVersion": model}
            answer["candidates"][0]["content"]["parts"] = [{"text": part["text"][5:]}]
            events.append("data: " + json.dumps(first) + "\r\n\r\n")
        events.append("data: " + json.dumps(answer) + "\r\n\r\n")
        self.sse(events)

    def anthropic(self, body):
        prompt = json.dumps(body.get("messages") or [])
        if "fail-400" in prompt:
            self.reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "messages: the mock refuses fail-400"}})
            return
        thinking_on = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        if thinking_on:
            # As Anthropic does: with thinking on, an assistant turn that used a tool must
            # bring its signed thinking block back.
            for m in body.get("messages") or []:
                blocks = m.get("content") if isinstance(m.get("content"), list) else []
                if m.get("role") == "assistant" and any(b.get("type") == "tool_use" for b in blocks):
                    if not any(b.get("type") == "thinking" and b.get("signature") == SIGNATURE for b in blocks):
                        self.reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                            "message": "messages: an assistant turn with tool_use must start with its signed thinking block"}})
                        return
        tools = body.get("tools") or []
        names = {t.get("name") for t in tools}
        decision = decide(body.get("messages") or [], tools, names)
        if decision[0] == "text":
            content = [{"type": "text", "text": decision[1]}]
            stop = "end_turn"
        else:
            content = [{"type": "tool_use", "id": "toolu_1", "name": decision[1], "input": decision[2]}]
            stop = "tool_use"
        if (body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
            content.insert(0, {"type": "thinking", "thinking": "Let me think.", "signature": SIGNATURE})
        usage = {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            self.reply(200, message)
            return

        def ev(name, obj):
            return "event: %s\ndata: %s\n\n" % (name, json.dumps(obj))

        start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
        events = [ev("message_start", {"type": "message_start", "message": start})]
        index = 0
        if content[0]["type"] == "thinking":
            events.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            events.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "thinking_delta", "thinking": "Let me think."}}))
            events.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "signature_delta", "signature": SIGNATURE}}))
            events.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        block = content[index]
        if block["type"] == "text":
            events.append(ev("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {"type": "text", "text": ""}}))
            events.append(ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            events.append(ev("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": dict(block, input={})}))
            events.append(ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "input_json_delta",
                                                               "partial_json": json.dumps(block["input"])}}))
        events.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(ev("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop, "stop_sequence": None},
                                           "usage": {"output_tokens": 5}}))
        events.append(ev("message_stop", {"type": "message_stop"}))
        self.sse(events)


def responses_handler(self, body):
    """OpenAI's Responses API, as a native upstream answers it."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    messages = []
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": item.get("content")})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else json.dumps(output)})
    tools = body.get("tools") or []
    names = {t.get("name") for t in tools}
    decision = decide(messages, tools, names)
    rid = "resp_mock1"
    if decision[0] == "text":
        item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": decision[1], "annotations": []}]}
    else:
        item = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
                "name": decision[1], "arguments": json.dumps(decision[2])}
    usage = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25}
    response = {"id": rid, "object": "response", "created_at": 1, "status": "completed",
                "model": body.get("model"), "output": [item], "usage": usage, "error": None,
                "incomplete_details": None}
    if not body.get("stream"):
        self.reply(200, response)
        return
    seq = [0]

    def ev(kind, obj):
        obj = dict(obj, type=kind, sequence_number=seq[0])
        seq[0] += 1
        return "event: %s\ndata: %s\n\n" % (kind, json.dumps(obj))

    started = dict(response, status="in_progress", output=[], usage=None)
    events = [ev("response.created", {"response": started}), ev("response.in_progress", {"response": started})]
    if item["type"] == "message":
        events.append(ev("response.output_item.added", {"output_index": 0, "item": dict(item, content=[], status="in_progress")}))
        events.append(ev("response.content_part.added", {"output_index": 0, "item_id": "msg_1", "content_index": 0,
                                                          "part": {"type": "output_text", "text": "", "annotations": []}}))
        events.append(ev("response.output_text.delta", {"output_index": 0, "item_id": "msg_1", "content_index": 0,
                                                         "delta": decision[1]}))
        events.append(ev("response.output_text.done", {"output_index": 0, "item_id": "msg_1", "content_index": 0,
                                                        "text": decision[1]}))
        events.append(ev("response.content_part.done", {"output_index": 0, "item_id": "msg_1", "content_index": 0,
                                                         "part": item["content"][0]}))
    else:
        events.append(ev("response.output_item.added", {"output_index": 0, "item": dict(item, arguments="", status="in_progress")}))
        events.append(ev("response.function_call_arguments.delta", {"output_index": 0, "item_id": "fc_1", "delta": item["arguments"]}))
        events.append(ev("response.function_call_arguments.done", {"output_index": 0, "item_id": "fc_1", "arguments": item["arguments"]}))
    events.append(ev("response.output_item.done", {"output_index": 0, "item": item}))
    events.append(ev("response.completed", {"response": response}))
    self.sse(events)


Handler.openai_responses = responses_handler


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    ARGS = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(ARGS.port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
