"""Model loader: writes a base model to `/content/artifacts` — copied from `params.path` in
the image when it holds one, else created and pre-trained on `params.corpus` (or the text
that ships with the image) for `params.epochs` passes."""

import os
import time

from . import contract
from .model import Model

CORPUS = os.path.join(os.path.dirname(__file__), "corpus.txt")


def main():
    p = contract.params()
    out = contract.path("artifacts")
    os.makedirs(out, exist_ok=True)
    if p.get("path"):
        src = p["path"]
        try:
            Model.load(src)
        except (OSError, ValueError) as e:
            contract.fail(f"params.path: {src} holds no model: {e}")
        contract.copy_tree(src, out)
        contract.log(f"imported the model at {src}")
        return
    corpus = p.get("corpus")
    if corpus is None:
        with open(CORPUS) as f:
            corpus = f.read()
    epochs = contract.number(p, "epochs", 3, int, minimum=0)
    rate = contract.number(p, "learning_rate", 0.5, float, minimum=0)
    model = Model(config={"name": p.get("name", "tinylm-base")})
    ids = model.tokenizer.encode(corpus)
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        loss = model.train_step(ids, rate)
        contract.log(f"pre-training epoch {epoch}/{epochs}: loss {loss:.3f}")
    model.save(out, metadata={"trained_on": f"{len(ids)} characters", "epochs": epochs})
    contract.log(f"wrote the base model to {out} in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    contract.main(main)
