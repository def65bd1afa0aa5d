"""The safetensors file format for float32 tensors: an 8-byte little-endian header length,
a JSON header naming each tensor's dtype, shape and byte range, then the raw data."""

import json
import struct
import sys
from array import array


def save(path, tensors, metadata=None):
    """Writes `tensors` ({name: (shape, array('f'))}) to `path`."""
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        shape, data = tensors[name]
        count = 1
        for d in shape:
            count *= d
        if len(data) != count:
            raise ValueError(f"tensor {name}: {len(data)} values for shape {shape}")
        blob = array("f", data)
        if sys.byteorder != "little":
            blob.byteswap()
        raw = blob.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    # The data starts 8-byte aligned.
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load(path):
    """Reads a safetensors file: ({name: (shape, array('f'))}, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header of {n} bytes runs past the end of the file")
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if info.get("dtype") != "F32":
            raise ValueError(f"{path}: tensor {name} is {info.get('dtype')}, only F32 is read")
        start, end = info["data_offsets"]
        data = array("f")
        data.frombytes(raw[base + start : base + end])
        if sys.byteorder != "little":
            data.byteswap()
        tensors[name] = (tuple(info["shape"]), data)
    return tensors, metadata
