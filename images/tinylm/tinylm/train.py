"""Trainer: fine-tunes the base model at `/content/model` on the records at `/content/data`
(`*.json` / `*.jsonl`: one object per line, or a list) and writes the result to
`/content/artifacts`, its progress to stdout.

Params, named as the original trainer's: `num_train_epochs` (1), `learning_rate` (0.5),
`save_steps` (a checkpoint every N steps in `artifacts/checkpoints/checkpoint-N`; 0: none),
`logging_steps` (10), `prompt_template` (each record formatted with its own fields; default
`{prompt}{completion}` style, Alpaca-like), `max_steps` (-1: no limit), `seed`.
"""

import glob
import json
import os
import random
import time

from . import contract
from .model import Model

DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n{completion}\n"


def records(directory):
    """Every record of the JSON and JSON-lines files under `directory`, sorted by file."""
    found = []
    files = sorted(glob.glob(os.path.join(directory, "**", "*.json*"), recursive=True))
    for name in files:
        with open(name) as f:
            text = f.read()
        try:
            value = json.loads(text)
            found.extend(value if isinstance(value, list) else [value])
        except json.JSONDecodeError:
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        found.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        contract.fail(f"{name}:{n}: not JSON: {e}")
    return files, found


def formatted(template, record):
    if not isinstance(record, dict):
        contract.fail(f"a record is {type(record).__name__}, not an object: {record!r}")
    try:
        return template.format(**record)
    except KeyError as e:
        contract.fail(f"params.prompt_template names {e}, which record {record!r} lacks")


def main():
    p = contract.params()
    epochs = contract.number(p, "num_train_epochs", p.get("epochs", 1), int, minimum=1)
    rate = contract.number(p, "learning_rate", 0.5, float, minimum=0)
    save_steps = contract.number(p, "save_steps", 0, int, minimum=0)
    logging_steps = contract.number(p, "logging_steps", 10, int, minimum=1)
    max_steps = contract.number(p, "max_steps", -1, int)
    template = p.get("prompt_template", DEFAULT_TEMPLATE)
    rng = random.Random(contract.number(p, "seed", 42, int))

    try:
        model = Model.load(contract.path("model"))
    except (OSError, ValueError) as e:
        contract.fail(f"no base model at {contract.path('model')}: {e}")
    files, found = records(contract.path("data"))
    if not found:
        contract.fail(f"no records in {contract.path('data')} (*.json, *.jsonl)")
    texts = [formatted(template, r) for r in found]
    contract.log(f"training on {len(texts)} records from {len(files)} files, {epochs} epochs")
    out = contract.path("artifacts")
    base_loss = sum(model.loss(model.tokenizer.encode(t)) for t in texts) / len(texts)
    contract.log(f"base model loss {base_loss:.3f}")
    step = 0
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        order = list(range(len(texts)))
        rng.shuffle(order)
        for i in order:
            if 0 <= max_steps <= step:
                break
            step += 1
            loss = model.train_step(model.tokenizer.encode(texts[i]), rate)
            if step % logging_steps == 0:
                contract.log(f"epoch {epoch}/{epochs} step {step}: loss {loss:.3f}")
            if save_steps and step % save_steps == 0:
                model.save(os.path.join(out, "checkpoints", f"checkpoint-{step}"))
                contract.log(f"saved checkpoint-{step}")
    final = sum(model.loss(model.tokenizer.encode(t)) for t in texts) / len(texts)
    model.config["fine_tuned_from"] = model.config.get("name", "base")
    model.config["name"] = p.get("name", model.config["fine_tuned_from"] + "-finetuned")
    model.save(out, metadata={"steps": step, "records": len(texts)})
    contract.log(
        f"trained {step} steps in {time.monotonic() - started:.1f}s: "
        f"loss {base_loss:.3f} -> {final:.3f}; wrote {out}"
    )


if __name__ == "__main__":
    contract.main(main)
