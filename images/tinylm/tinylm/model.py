"""A character-level causal language model: the logits of the next character given the two
before it, one row of a table per context, trained by gradient descent on cross-entropy."""

import json
import math
import os
import random
from array import array

from . import safetensors

# Printable ASCII and newline; anything else reads as UNK.
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
UNK = "\u2047"
TENSOR = "lm_head.weight"
MODEL_TYPE = "substratus-tinylm"


class Tokenizer:
    def __init__(self, alphabet=ALPHABET):
        self.chars = list(alphabet) + [UNK]
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.unk = len(self.chars) - 1

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return [self.index.get(c, self.unk) for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids if i != self.unk)

    def to_json(self):
        return {"type": "char", "vocab": {c: i for i, c in enumerate(self.chars)}, "unk_token": UNK}

    @classmethod
    def from_json(cls, value):
        vocab = value["vocab"]
        chars = sorted(vocab, key=vocab.get)
        if not chars or chars[-1] != UNK:
            raise ValueError("tokenizer.json: the last token must be the unknown token")
        return cls("".join(chars[:-1]))


class Model:
    """`weights[(a * V + b) * V + c]`: the logit of `c` after `a b`."""

    def __init__(self, tokenizer=None, weights=None, config=None):
        self.tokenizer = tokenizer or Tokenizer()
        v = len(self.tokenizer)
        self.weights = weights if weights is not None else array("f", bytes(4 * v * v * v))
        if len(self.weights) != v * v * v:
            raise ValueError(f"{len(self.weights)} weights for a vocabulary of {v}")
        self.config = dict(config or {})
        self.config.update({"model_type": MODEL_TYPE, "vocab_size": v, "context": 2})

    @property
    def vocab(self):
        return len(self.tokenizer)

    def _row(self, a, b):
        start = (a * self.vocab + b) * self.vocab
        return start, start + self.vocab

    def probabilities(self, a, b, temperature=1.0):
        start, end = self._row(a, b)
        row = self.weights[start:end]
        t = max(temperature, 1e-3)
        top = max(row)
        exps = [math.exp((x - top) / t) for x in row]
        total = sum(exps)
        return [e / total for e in exps]

    def _context(self, ids):
        pad = self.tokenizer.index["\n"]
        a = ids[-2] if len(ids) >= 2 else pad
        b = ids[-1] if ids else pad
        return a, b

    def train_step(self, ids, learning_rate):
        """One pass over `ids`; returns the mean loss."""
        pad = self.tokenizer.index["\n"]
        seq = [pad, pad] + list(ids)
        total = 0.0
        for i in range(2, len(seq)):
            a, b, c = seq[i - 2], seq[i - 1], seq[i]
            p = self.probabilities(a, b)
            total -= math.log(max(p[c], 1e-12))
            start, _ = self._row(a, b)
            w = self.weights
            for j, pj in enumerate(p):
                w[start + j] -= learning_rate * pj
            w[start + c] += learning_rate
        return total / max(len(seq) - 2, 1)

    def loss(self, ids):
        pad = self.tokenizer.index["\n"]
        seq = [pad, pad] + list(ids)
        total = 0.0
        for i in range(2, len(seq)):
            p = self.probabilities(seq[i - 2], seq[i - 1])
            total -= math.log(max(p[seq[i]], 1e-12))
        return total / max(len(seq) - 2, 1)

    def generate(self, prompt, max_tokens=32, temperature=1.0, seed=None, stop=None):
        """Yields the characters that follow `prompt`, one at a time."""
        rng = random.Random(seed)
        ids = self.tokenizer.encode(prompt)
        text = ""
        for _ in range(max_tokens):
            a, b = self._context(ids)
            p = self.probabilities(a, b, temperature)
            if temperature <= 0:
                c = max(range(len(p)), key=p.__getitem__)
            else:
                c = rng.choices(range(len(p)), weights=p)[0]
            ids.append(c)
            piece = self.tokenizer.decode([c])
            text += piece
            if stop and any(s and s in text for s in stop):
                return
            yield piece

    def save(self, directory, metadata=None):
        os.makedirs(directory, exist_ok=True)
        v = self.vocab
        safetensors.save(
            os.path.join(directory, "model.safetensors"),
            {TENSOR: ((v * v, v), self.weights)},
            metadata={"format": "pt", **(metadata or {})},
        )
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(self.config, f, indent=2, sort_keys=True)
        with open(os.path.join(directory, "tokenizer.json"), "w") as f:
            json.dump(self.tokenizer.to_json(), f)

    @classmethod
    def load(cls, directory):
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{directory}: model_type {config.get('model_type')!r}, not {MODEL_TYPE!r}")
        with open(os.path.join(directory, "tokenizer.json")) as f:
            tokenizer = Tokenizer.from_json(json.load(f))
        tensors, _ = safetensors.load(os.path.join(directory, "model.safetensors"))
        if TENSOR not in tensors:
            raise ValueError(f"{directory}/model.safetensors has no {TENSOR}")
        _, weights = tensors[TENSOR]
        return cls(tokenizer, weights, config)
