"""Server: an OpenAI-compatible HTTP API over the model at `/content/model` (env `MODEL`),
on port 8080 (env `PORT`), and the fine-tuned adapters in the folders of
`/content/adapters` (env `ADAPTERS`), each served under its folder's name (from its highest
numbered subfolder when it has some: `<name>/<generation>`). `GET /` answers
200 only once the weights are loaded (503 before), so a readiness probe on `/` waits for them.

- `GET /v1/models`: the model, then the adapters (`parent` names the model, `root` the
  folder the adapter was loaded from)
- `POST /v1/completions`: `model` (an adapter's name selects it; anything else is the
  model), `prompt`, `max_tokens` (16), `temperature` (1.0), `seed`, `stop`, `stream`
  (server-sent events, ending with `data: [DONE]`)
- `POST /v1/chat/completions`: `messages` ([{role, content}]), the same options
- `POST /v1/load_lora_adapter` (`lora_name`, `lora_path`) and `POST /v1/unload_lora_adapter`
  (`lora_name`): adapters loaded and dropped at run time, as vLLM's API does; loading a
  name that is loaded replaces it
"""

import json
import os
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .model import Model

MAX_TOKENS = 4096


class BadRequest(Exception):
    pass


class State:
    def __init__(self, name):
        self.name = name
        self.model = None
        self.error = None
        self.loaded = threading.Event()
        # Adapter name -> Model, replaced whole under the lock (readers take a reference).
        self.adapters = {}
        # Adapter name -> the folder it was loaded from.
        self.roots = {}
        self.lock = threading.Lock()

    def pick(self, requested):
        """The model a request's `model` selects, and the name it answers as."""
        adapter = self.adapters.get(requested) if isinstance(requested, str) else None
        if adapter is not None:
            return adapter, requested
        return self.model, self.name


ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")


def load_adapter(state, name, directory):
    """Loads the model at `directory` as adapter `name`; raises BadRequest naming the field."""
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise BadRequest("lora_name: letters, digits, '-', '_' and '.', at most 63")
    if name == state.name:
        raise BadRequest(f"lora_name: {name} is the model's own name")
    if not isinstance(directory, str) or not directory:
        raise BadRequest("lora_path: the folder of the adapter is required")
    try:
        model = Model.load(directory)
    except (OSError, ValueError) as e:
        raise BadRequest(f"lora_path: cannot load {directory}: {e}") from e
    with state.lock:
        state.adapters = {**state.adapters, name: model}
        state.roots = {**state.roots, name: directory}
    print(f"loaded adapter {name} from {directory}: {model.config}", flush=True)


def chat_prompt(messages):
    """The prompt the chat messages read as, ending where the assistant speaks."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list of {role, content} is required")
    lines = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}]: an object with a string content is required")
        lines.append(f"{m.get('role', 'user')}: {m['content']}")
    return "\n".join(lines) + "\nassistant:"


def options(body):
    max_tokens = body.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or not 0 < max_tokens <= MAX_TOKENS:
        raise BadRequest(f"max_tokens: an integer from 1 to {MAX_TOKENS}")
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise BadRequest("temperature: a number >= 0")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise BadRequest("stop: a string or a list of strings")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise BadRequest("seed: an integer")
    return {"max_tokens": max_tokens, "temperature": float(temperature), "stop": stop, "seed": seed}


class Handler(BaseHTTPRequestHandler):
    state = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)

    def reply(self, code, value):
        raw = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def error(self, code, message, kind="invalid_request_error"):
        self.reply(code, {"error": {"message": message, "type": kind}})

    def do_GET(self):
        s = self.state
        if self.path == "/":
            if s.error:
                return self.error(500, f"the model did not load: {s.error}", "server_error")
            if not s.loaded.is_set():
                return self.error(503, "loading the model", "server_error")
            config = s.model.config if s.model else {}
            return self.reply(200, {"status": "ok", "model": s.name, "config": config})
        if self.path == "/v1/models":
            if not s.loaded.is_set():
                return self.reply(200, {"object": "list", "data": []})
            data = [{"id": s.name, "object": "model", "created": 0, "owned_by": "substratus"}]
            roots = s.roots
            data += [{"id": a, "object": "model", "created": 0, "owned_by": "substratus", "parent": s.name,
                      "root": roots.get(a, "")}
                     for a in sorted(s.adapters)]
            return self.reply(200, {"object": "list", "data": data})
        self.error(404, f"no route {self.path}")

    def body(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def adapter_api(self):
        s = self.state
        try:
            body = self.body()
            if self.path == "/v1/load_lora_adapter":
                load_adapter(s, body.get("lora_name"), body.get("lora_path"))
                return self.reply(200, {"status": "loaded", "lora_name": body["lora_name"]})
            name = body.get("lora_name")
            with s.lock:
                if name not in s.adapters:
                    return self.error(404, f"lora_name: no adapter {name!r} is loaded")
                s.adapters = {k: v for k, v in s.adapters.items() if k != name}
                s.roots = {k: v for k, v in s.roots.items() if k != name}
            return self.reply(200, {"status": "unloaded", "lora_name": name})
        except (ValueError, BadRequest) as e:
            return self.error(400, str(e))

    def do_POST(self):
        s = self.state
        if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            return self.adapter_api()
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self.error(404, f"no route {self.path}")
        if not s.loaded.is_set() or s.model is None:
            return self.error(503, "the model is not loaded yet", "server_error")
        try:
            body = self.body()
            chat = self.path == "/v1/chat/completions"
            if chat:
                prompt = chat_prompt(body.get("messages"))
            else:
                prompt = body.get("prompt", "")
                if isinstance(prompt, list) and len(prompt) == 1:
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    raise BadRequest("prompt: a string")
            opts = options(body)
        except (ValueError, BadRequest) as e:
            return self.error(400, str(e))
        model, answering_as = s.pick(body.get("model"))
        pieces = model.generate(prompt, **opts)
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        common = {"id": ident, "created": int(time.time()), "model": answering_as}
        if body.get("stream"):
            return self.stream(pieces, chat, common)
        text = "".join(pieces)
        n = len(text)
        finish = "length" if n >= opts["max_tokens"] else "stop"
        usage = {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return self.reply(200, {**common, "object": "chat.completion", "choices": [choice], "usage": usage})
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        self.reply(200, {**common, "object": "text_completion", "choices": [choice], "usage": usage})

    def stream(self, pieces, chat, common):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choice):
            raw = json.dumps({**common, "object": kind, "choices": [choice]})
            self.wfile.write(f"data: {raw}\n\n".encode())
            self.wfile.flush()

        if chat:
            event({"index": 0, "delta": {"role": "assistant"}, "finish_reason": None})
        for piece in pieces:
            if chat:
                event({"index": 0, "delta": {"content": piece}, "finish_reason": None})
            else:
                event({"index": 0, "text": piece, "logprobs": None, "finish_reason": None})
        if chat:
            event({"index": 0, "delta": {}, "finish_reason": "stop"})
        else:
            event({"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def adapter_folder(path):
    """The folder to load adapter folder `path` from: its newest run, the highest numbered
    subfolder (`<name>/<generation>`, as the operator copies them), else `path` itself."""
    runs = [d for d in os.listdir(path) if d.isdigit() and os.path.isdir(os.path.join(path, d))]
    return os.path.join(path, max(runs, key=int)) if runs else path


def load(state, directory, adapters=None):
    """Loads the model, then each folder of `adapters` as the adapter of its name; ready
    (or failed, saying what) once all are loaded."""
    try:
        state.model = Model.load(directory)
        print(f"loaded {directory}: {state.model.config}", flush=True)
        names = sorted(os.listdir(adapters)) if adapters and os.path.isdir(adapters) else []
        for name in names:
            path = os.path.join(adapters, name)
            if os.path.isdir(path):
                try:
                    load_adapter(state, name, adapter_folder(path))
                except BadRequest as e:
                    raise ValueError(f"adapter {name}: {e}") from e
    except (OSError, ValueError) as e:
        state.error = str(e)
        print(f"error: cannot load the model at {directory}: {e}", flush=True)
    finally:
        state.loaded.set()


def server(directory, port, name, host="0.0.0.0", adapters=None):
    """A server bound to `port` that loads the model (and adapters) in the background."""
    state = State(name)
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=load, args=(state, directory, adapters), daemon=True).start()
    return httpd, state


def main():
    directory = os.environ.get("MODEL", "/content/model")
    adapters = os.environ.get("ADAPTERS", "/content/adapters")
    port = int(os.environ.get("PORT", "8080"))
    name = os.environ.get("SERVER_MODEL_NAME") or socket.gethostname()
    httpd, _ = server(directory, port, name, adapters=adapters)
    print(f"serving {directory} as {name} on :{port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
