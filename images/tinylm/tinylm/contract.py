"""The container contract: `/content/params.json` (the object's `spec.params`), inputs at
`/content/data` and `/content/model`, outputs to `/content/artifacts`. `CONTENT_DIR` moves
the root (for tests)."""

import json
import os
import shutil
import sys
import traceback


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


TERMINATION_LOG = "/dev/termination-log"


def fail(message):
    """Stops with `message` on stderr and in the termination log, whence Kubernetes reads
    the container's last words: it becomes the Job's failure message."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    try:
        with open(os.environ.get("TERMINATION_LOG", TERMINATION_LOG), "w") as f:
            f.write(message)
    except OSError:
        pass
    sys.exit(1)


def main(program):
    """Runs `program`; an unexpected exception fails the container with its traceback on
    stderr and its last line as the termination message."""
    try:
        program()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - anything left unhandled ends the container
        traceback.print_exc()
        fail(f"{type(e).__name__}: {e}")


def copy_tree(src, dst):
    """Copies the files under `src` into `dst`, contents only: a bucket mount keeps no
    modes, owners or times, and refuses to be asked to."""
    for top, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(top, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        os.makedirs(target, exist_ok=True)
        for name in sorted(files):
            shutil.copyfile(os.path.join(top, name), os.path.join(target, name))


def log(message):
    print(message, flush=True)
