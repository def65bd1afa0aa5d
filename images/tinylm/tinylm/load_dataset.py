"""Dataset loader: fetches `params.url` (or each of `params.urls`, a list or a comma-separated
string) into `/content/artifacts`,
or copies the files under `params.path` in the image; `params.name` names a single file."""

import os
import shutil
import urllib.parse
import urllib.request

from . import contract


def fetch(url, target, timeout):
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        contract.fail(f"params.url: {url!r} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        contract.fail(f"fetching {url}: {e}")
    contract.log(f"fetched {url} -> {target} ({os.path.getsize(target)} bytes)")


def main():
    p = contract.params()
    out = contract.path("artifacts")
    os.makedirs(out, exist_ok=True)
    timeout = contract.number(p, "timeout_seconds", 60, float, minimum=1)
    urls = p.get("urls") or ([p["url"]] if p.get("url") else [])
    if isinstance(urls, str):
        # The original loader's form: a comma-separated list.
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    if urls:
        for url in urls:
            name = p.get("name") if len(urls) == 1 and p.get("name") else None
            name = name or os.path.basename(urllib.parse.urlparse(url).path) or "data"
            if "/" in name or name in (".", ".."):
                contract.fail(f"params.name: {name!r} is not a file name")
            fetch(url, os.path.join(out, name), timeout)
    elif p.get("path"):
        src = p["path"]
        if not os.path.exists(src):
            contract.fail(f"params.path: {src} does not exist in the image")
        if os.path.isdir(src):
            contract.copy_tree(src, out)
        else:
            shutil.copyfile(src, os.path.join(out, os.path.basename(src)))
        contract.log(f"copied {src} -> {out}")
    else:
        contract.fail("params: set url (or urls) to fetch, or path to copy from the image")
    for name in sorted(os.listdir(out)):
        contract.log(f"  {name}: {os.path.getsize(os.path.join(out, name))} bytes")


if __name__ == "__main__":
    contract.main(main)
