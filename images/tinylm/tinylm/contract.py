"""The container contract: `/content/params.json` (the object's `spec.params`), inputs at
`/content/data` and `/content/model`, outputs to `/content/artifacts`. `CONTENT_DIR` moves
the root (for tests)."""

import json
import os
import sys


def root():
    return os.environ.get("CONTENT_DIR", "/content")


def path(*parts):
    return os.path.join(root(), *parts)


def params():
    """The params, `{}` when the object has none."""
    try:
        with open(path("params.json")) as f:
            value = json.load(f)
    except FileNotFoundError:
        return {}
    if not isinstance(value, dict):
        fail(f"{path('params.json')}: expected an object, got {type(value).__name__}")
    return value


def number(p, name, default, kind=int, minimum=None):
    """`params[name]` as `kind`, or `default`; a wrong value fails naming the param."""
    value = p.get(name, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        fail(f"params.{name}: {value!r} is not a {kind.__name__}")
    if minimum is not None and value < minimum:
        fail(f"params.{name}: {value} is below {minimum}")
    return value


def fail(message):
    """Stops with `message` on stderr: it becomes the Job's failure message."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def log(message):
    print(message, flush=True)
