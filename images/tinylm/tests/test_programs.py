"""The programs as a container runs them (`python3 -m tinylm.<program>`), over a content
directory of their own and, for the loader, an HTTP server on the loopback address."""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

from tinylm import serve
from tinylm.model import Model

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(program, content, params=None):
    os.makedirs(content, exist_ok=True)
    if params is not None:
        with open(os.path.join(content, "params.json"), "w") as f:
            json.dump(params, f)
    env = dict(os.environ, CONTENT_DIR=content, PYTHONPATH=HERE,
               TERMINATION_LOG=os.path.join(content, "termination-log"))
    return subprocess.run(
        [sys.executable, "-m", f"tinylm.{program}"], env=env, capture_output=True, text=True, timeout=120
    )


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class ProgramsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def content(self, name):
        return os.path.join(self.root, name)

    def test_the_loader_fetches_urls_and_copies_image_files_and_names_a_bad_param(self):
        site = self.content("site")
        os.makedirs(site)
        with open(os.path.join(site, "train.jsonl"), "w") as f:
            f.write('{"prompt": "a", "completion": "b"}\n')
        handler = lambda *a, **k: Files(*a, directory=site, **k)  # noqa: E731
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/train.jsonl"
            r = run("load_dataset", self.content("d1"), {"urls": f"{url}, {url}"})
            self.assertEqual(r.returncode, 0, r.stderr)
            got = open(os.path.join(self.content("d1"), "artifacts", "train.jsonl")).read()
            self.assertIn('"completion": "b"', got)
            r = run("load_dataset", self.content("d2"), {"url": url + ".missing"})
            self.assertEqual(r.returncode, 1)
            self.assertIn("404", r.stderr)
        finally:
            httpd.shutdown()
        r = run("load_dataset", self.content("d3"), {"path": site})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.content("d3"), "artifacts", "train.jsonl")))
        for params, named in [({}, "params"), ({"url": "file:///etc/passwd"}, "params.url"),
                              ({"url": "http://127.0.0.1:1/x", "timeout_seconds": "soon"}, "params.timeout_seconds")]:
            r = run("load_dataset", self.content("bad"), params)
            self.assertEqual(r.returncode, 1, params)
            self.assertIn(named, r.stderr)
            # The same words in the termination log, for the Job's failure message.
            self.assertIn(named, open(os.path.join(self.content("bad"), "termination-log")).read())

    def test_a_base_model_is_made_then_fine_tuned_into_other_weights_with_checkpoints(self):
        base = self.content("base")
        r = run("load_model", base, {"epochs": 2, "name": "tiny-base"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pre-training epoch 2/2", r.stdout)
        base_model = Model.load(os.path.join(base, "artifacts"))
        self.assertEqual(base_model.config["name"], "tiny-base")

        tune = self.content("tune")
        os.makedirs(os.path.join(tune, "data"))
        os.symlink(os.path.join(base, "artifacts"), os.path.join(tune, "model"))
        with open(os.path.join(tune, "data", "qa.jsonl"), "w") as f:
            for q, a in [("What runs pods?", "the node"), ("Where are artifacts?", "in the bucket")]:
                f.write(json.dumps({"question": q, "answer": a}) + "\n")
        params = {"num_train_epochs": 3, "save_steps": 2, "logging_steps": 1,
                  "prompt_template": "Q: {question}\nA: {answer}\n"}
        r = run("train", tune, params)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("training on 2 records from 1 files, 3 epochs", r.stdout)
        self.assertIn("epoch 3/3 step 6", r.stdout)
        out = os.path.join(tune, "artifacts")
        self.assertEqual(sorted(os.listdir(os.path.join(out, "checkpoints"))),
                         ["checkpoint-2", "checkpoint-4", "checkpoint-6"])
        tuned = Model.load(out)
        self.assertNotEqual(tuned.weights, base_model.weights)
        self.assertEqual(tuned.config["fine_tuned_from"], "tiny-base")
        text = "Q: What runs pods?\nA: the node\n"
        ids = tuned.tokenizer.encode(text)
        self.assertLess(tuned.loss(ids), base_model.loss(ids))

        # A template naming a field the records lack fails naming it.
        params["prompt_template"] = "{prompt}"
        r = run("train", tune, params)
        self.assertEqual(r.returncode, 1)
        self.assertIn("params.prompt_template names 'prompt'", r.stderr)


def trained(directory, text, name):
    m = Model(config={"name": name})
    for _ in range(30):
        m.train_step(m.tokenizer.encode(text), 1.0)
    m.save(directory)


class Served(unittest.TestCase):
    """A server named `tiny` on a loopback port, over the model at `directory`."""

    @classmethod
    def serve(cls, directory, adapters=None):
        cls.httpd, cls.state = serve.server(directory, 0, "tiny", host="127.0.0.1", adapters=adapters)
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()
        cls.base = f"http://127.0.0.1:{cls.httpd.server_address[1]}"
        cls.state.loaded.wait(30)

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.httpd.server_close()
        cls.tmp.cleanup()

    def call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


class ServerTest(Served):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        trained(cls.tmp.name, "ping pong ping pong ", "t")
        cls.serve(cls.tmp.name)

    def test_ready_and_models(self):
        code, body = self.call("/")
        self.assertEqual(code, 200)
        # What is loaded: the model's own config.
        self.assertEqual(json.loads(body)["config"]["name"], "t")
        code, body = self.call("/v1/models")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["data"][0]["id"], "tiny")

    def test_completions_follow_the_model(self):
        code, body = self.call("/v1/completions", {"prompt": "ping", "max_tokens": 5, "temperature": 0})
        self.assertEqual(code, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["object"], "text_completion")
        self.assertEqual(answer["choices"][0]["text"], " pong")
        self.assertEqual(answer["usage"]["completion_tokens"], 5)

    def test_streaming_sends_each_piece_as_an_event_then_done(self):
        code, body = self.call("/v1/completions",
                               {"prompt": "ping", "max_tokens": 5, "temperature": 0, "stream": True})
        self.assertEqual(code, 200)
        events = [line[len("data: "):] for line in body.split("\n") if line.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks), " pong")
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")

    def test_chat_completions_answer_as_the_assistant_and_stream_deltas(self):
        code, body = self.call("/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 4, "seed": 1})
        self.assertEqual(code, 200, body)
        message = json.loads(body)["choices"][0]["message"]
        self.assertEqual(message["role"], "assistant")
        self.assertEqual(len(message["content"]), 4)
        code, body = self.call("/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 4, "stream": True})
        self.assertEqual(code, 200)
        events = [line[6:] for line in body.split("\n") if line.startswith("data: ")]
        first = json.loads(events[0])
        self.assertEqual(first["object"], "chat.completion.chunk")
        self.assertEqual(first["choices"][0]["delta"], {"role": "assistant"})
        self.assertEqual(events[-1], "[DONE]")

    def test_bad_requests_name_the_field(self):
        for path, body, named in [
            ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
            ("/v1/completions", {"prompt": 3}, "prompt"),
            ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
            ("/v1/chat/completions", {"messages": []}, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages[0]"),
        ]:
            code, text = self.call(path, body)
            self.assertEqual(code, 400, body)
            self.assertIn(named, json.loads(text)["error"]["message"])
        self.assertEqual(self.call("/v1/nothing", {})[0], 404)


class AdapterTest(Served):
    """Adapters from the folders of the adapters directory, and loaded at run time."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        trained(os.path.join(root, "model"), "ping pong ping pong ", "base")
        # As the operator copies them: <name>/<generation>; the newest run is served.
        trained(os.path.join(root, "adapters", "ding", "2"), "ping dong ping dong ", "ding")
        trained(os.path.join(root, "adapters", "ding", "10"), "ping ding ping ding ", "ding")
        trained(os.path.join(root, "later"), "ping zing ping zing ", "zing")
        cls.serve(os.path.join(root, "model"), adapters=os.path.join(root, "adapters"))

    def complete(self, model):
        code, body = self.call("/v1/completions", {"model": model, "prompt": "ping", "max_tokens": 5,
                                                   "temperature": 0})
        self.assertEqual(code, 200, body)
        answer = json.loads(body)
        return answer["model"], answer["choices"][0]["text"]

    def test_the_adapters_folders_are_listed_and_selected_by_model(self):
        self.assertEqual(self.call("/")[0], 200)
        data = json.loads(self.call("/v1/models")[1])["data"]
        self.assertEqual([(m["id"], m.get("parent")) for m in data][:2], [("tiny", None), ("ding", "tiny")])
        self.assertEqual(data[1]["root"], os.path.join(self.tmp.name, "adapters", "ding", "10"))
        self.assertEqual(self.complete("ding"), ("ding", " ding"))
        # Any other name is the model itself.
        self.assertEqual(self.complete("tiny"), ("tiny", " pong"))
        self.assertEqual(self.complete("other"), ("tiny", " pong"))

    def test_adapters_load_and_unload_at_run_time_and_bad_requests_name_the_field(self):
        later = os.path.join(self.tmp.name, "later")
        code, body = self.call("/v1/load_lora_adapter", {"lora_name": "zing", "lora_path": later})
        self.assertEqual(code, 200, body)
        self.assertEqual(self.complete("zing"), ("zing", " zing"))
        listed = {m["id"]: m.get("root") for m in json.loads(self.call("/v1/models")[1])["data"]}
        self.assertEqual(listed.get("zing"), later)
        # Loading a name again replaces it, from the new folder.
        again = os.path.join(self.tmp.name, "adapters", "ding", "2")
        code, body = self.call("/v1/load_lora_adapter", {"lora_name": "zing", "lora_path": again})
        self.assertEqual(code, 200, body)
        self.assertEqual(self.complete("zing"), ("zing", " dong"))
        listed = {m["id"]: m.get("root") for m in json.loads(self.call("/v1/models")[1])["data"]}
        self.assertEqual(listed.get("zing"), again)
        code, body = self.call("/v1/unload_lora_adapter", {"lora_name": "zing"})
        self.assertEqual(code, 200, body)
        self.assertEqual(self.complete("zing"), ("tiny", " pong"))
        self.assertEqual(self.call("/v1/unload_lora_adapter", {"lora_name": "zing"})[0], 404)
        for body, named in [({"lora_name": "../x", "lora_path": later}, "lora_name"),
                            ({"lora_name": "tiny", "lora_path": later}, "lora_name"),
                            ({"lora_name": "x"}, "lora_path"),
                            ({"lora_name": "x", "lora_path": "/nonexistent"}, "lora_path")]:
            code, text = self.call("/v1/load_lora_adapter", body)
            self.assertEqual(code, 400, body)
            self.assertIn(named, json.loads(text)["error"]["message"])


class ServerLoadingTest(unittest.TestCase):
    def test_not_ready_until_loaded_and_a_missing_model_is_an_error_on_ready(self):
        state = serve.State("x")
        handler = type("H", (serve.Handler,), {"state": state})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        try:
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url, timeout=5)
            self.assertEqual(e.exception.code, 503)
            serve.load(state, "/nonexistent/model")
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url, timeout=5)
            self.assertEqual(e.exception.code, 500)
        finally:
            httpd.shutdown()
            httpd.server_close()


if __name__ == "__main__":
    unittest.main()
