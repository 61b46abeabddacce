"""safetensors files read and written with numpy alone: no torch, and every dtype the released
GLM checkpoints use (bfloat16 through ml_dtypes, which the `safetensors` package's numpy API
lacks).

The format: an 8-byte little-endian header length, a JSON header mapping each name to its dtype,
shape and [begin, end) byte range in the data that follows, and the raw little-endian data.
"""
from __future__ import annotations

import json
import struct
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
           "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(dtype): name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # a header larger than this is damage, not a checkpoint


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(tensors, the header's __metadata__). Arrays are views of a read-only memory map."""
  with open(path, "rb") as handle:
    prefix = handle.read(8)
    if len(prefix) < 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than its header length).")
    (size,) = struct.unpack("<Q", prefix)
    if size > _MAX_HEADER:
      raise ValueError(f"{path}: not a safetensors file (header length {size} bytes).")
    try:
      header = json.loads(handle.read(size))
    except ValueError as error:
      raise ValueError(f"{path}: the safetensors header is not JSON ({error}).") from error
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
  metadata = header.pop("__metadata__", {}) or {}
  tensors = {}
  for name, info in header.items():
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which glmjax does "
                       f"not read (expected one of {sorted(_DTYPES)}).")
    begin, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    if end > data.size or (end - begin) != dtype.itemsize * int(np.prod(info["shape"])):
      raise ValueError(f"{path}: tensor {name!r} runs past the end of the file or has the "
                       "wrong size; the file is cut off or damaged.")
    tensors[name] = data[begin:end].view(dtype).reshape(info["shape"])
  return tensors, metadata


def write(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
          progress: Callable[[int, int], None] | None = None) -> None:
  """Writes `tensors` in name order, as the safetensors library does (8-byte aligned header);
  `progress(bytes written, bytes in all)` after each tensor."""
  header, offset = {}, 0
  names = sorted(tensors)
  for name in names:
    array = np.asarray(tensors[name])
    if array.dtype not in _NAMES:
      raise ValueError(f"{name}: dtype {array.dtype} has no safetensors name.")
    header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    offset += array.nbytes
  if metadata:
    header["__metadata__"] = dict(metadata)
  encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as handle:
    handle.write(struct.pack("<Q", len(encoded)))
    handle.write(encoded)
    for name in names:
      handle.write(np.ascontiguousarray(tensors[name]).astype(
          np.asarray(tensors[name]).dtype.newbyteorder("<"), copy=False).tobytes())
      if progress is not None:
        progress(header[name]["data_offsets"][1], offset)
