import json
import os
import tempfile
import unittest
from array import array

from tinylm import safetensors
from tinylm.model import Model, Tokenizer


class TokenizerTest(unittest.TestCase):
    def test_text_round_trips_and_unknown_characters_are_dropped(self):
        t = Tokenizer()
        self.assertEqual(t.decode(t.encode("Hello, world!\n")), "Hello, world!\n")
        self.assertEqual(t.decode(t.encode("caf\u00e9")), "caf")
        again = Tokenizer.from_json(json.loads(json.dumps(t.to_json())))
        self.assertEqual(again.chars, t.chars)


class SafetensorsTest(unittest.TestCase):
    def test_tensors_round_trip_and_the_header_is_the_documented_one(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            safetensors.save(path, {"w": ((2, 3), array("f", [1, 2, 3, 4, 5, 6.5]))}, {"k": 1})
            tensors, meta = safetensors.load(path)
            self.assertEqual(tensors["w"][0], (2, 3))
            self.assertEqual(list(tensors["w"][1]), [1, 2, 3, 4, 5, 6.5])
            self.assertEqual(meta, {"k": "1"})
            raw = open(path, "rb").read()
            n = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8 : 8 + n])
            self.assertEqual(header["w"], {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]})
            self.assertEqual((8 + n) % 8, 0, "data is 8-byte aligned")

    def test_a_wrong_shape_or_a_truncated_file_is_an_error(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            with self.assertRaises(ValueError):
                safetensors.save(path, {"w": ((2, 2), array("f", [1.0]))})
            with open(path, "wb") as f:
                f.write((1000).to_bytes(8, "little") + b"{}")
            with self.assertRaises(ValueError):
                safetensors.load(path)


class ModelTest(unittest.TestCase):
    def test_training_lowers_the_loss_and_generation_follows_the_text(self):
        m = Model()
        ids = m.tokenizer.encode("abcabcabcabc")
        before = m.loss(ids)
        for _ in range(20):
            m.train_step(ids, 1.0)
        self.assertLess(m.loss(ids), before / 4)
        # Greedy decoding continues the pattern.
        self.assertEqual("".join(m.generate("ab", max_tokens=6, temperature=0)), "cabcab")

    def test_generation_is_repeatable_with_a_seed_and_stops_at_a_stop_string(self):
        m = Model()
        m.train_step(m.tokenizer.encode("hello there. hello again."), 0.5)
        a = "".join(m.generate("he", max_tokens=20, seed=7))
        b = "".join(m.generate("he", max_tokens=20, seed=7))
        self.assertEqual(a, b)
        self.assertEqual(len(a), 20)
        m2 = Model()
        for _ in range(30):
            m2.train_step(m2.tokenizer.encode("xy.xy.xy."), 1.0)
        self.assertEqual("".join(m2.generate("xy", max_tokens=10, temperature=0, stop=["y"])), ".x")

    def test_a_saved_model_loads_the_same_and_another_format_is_refused(self):
        m = Model(config={"name": "t"})
        m.train_step(m.tokenizer.encode("some text"), 0.5)
        with tempfile.TemporaryDirectory() as d:
            m.save(d)
            self.assertEqual(sorted(os.listdir(d)), ["config.json", "model.safetensors", "tokenizer.json"])
            again = Model.load(d)
            self.assertEqual(again.weights, m.weights)
            self.assertEqual(again.config["name"], "t")
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"model_type": "llama"}, f)
            with self.assertRaises(ValueError):
                Model.load(d)


if __name__ == "__main__":
    unittest.main()
