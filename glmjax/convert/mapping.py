"""The original GLM parameters <-> glmjax's, and the model config a checkpoint implies.

Original (torch Linear weights are [out, in])        glmjax (scan_layers: stacked on axis 0)
  word_embeddings.weight [V, H]                      word_embeddings [V, H]
  transformer.position_embeddings.weight [P+1, H]    position_embeddings [P+1, H]
  transformer.block_position_embeddings.weight       block_position_embeddings [P+1, H]
  transformer.layers.i.input_layernorm.{weight,bias} layers/input_layernorm/{scale,bias}
  ...attention.query_key_value.weight [3H, H]        layers/attention/qkv_kernel [H, 3, N, D]
  ...attention.query_key_value.bias [3H]             layers/attention/qkv_bias [3, N, D]
  ...attention.dense.weight [H, H], .bias            layers/attention/out_kernel [N, D, H], out_bias
  ...post_attention_layernorm.{weight,bias}          layers/post_attention_layernorm/{scale,bias}
  ...mlp.dense_h_to_4h.weight [F, H], .bias          layers/mlp/wi_kernel [H, F], wi_bias
  ...mlp.dense_4h_to_h.weight [H, F], .bias          layers/mlp/wo_kernel [F, H], wo_bias
  transformer.final_layernorm.{weight,bias}          final_layernorm/{scale,bias}
QKV rows are the contiguous thirds [Q | K | V], each head-major, so a transpose and a reshape
map them exactly; every mapping is a transpose or a reshape, so the round trip is bit-exact.
"""
from __future__ import annotations

import re
from typing import Any

import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy, for the dtype names
import numpy as np

LAYER = "transformer.layers.{}."
HEAD_DIM = 64  # every released GLM model (Base to 10B); a Megatron file without args needs it

# (original suffix within a layer, glmjax path within layers/, to glmjax, from glmjax)
_LAYER_MAP = (
    ("input_layernorm.weight", ("input_layernorm", "scale")),
    ("input_layernorm.bias", ("input_layernorm", "bias")),
    ("attention.query_key_value.weight", ("attention", "qkv_kernel")),
    ("attention.query_key_value.bias", ("attention", "qkv_bias")),
    ("attention.dense.weight", ("attention", "out_kernel")),
    ("attention.dense.bias", ("attention", "out_bias")),
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "scale")),
    ("post_attention_layernorm.bias", ("post_attention_layernorm", "bias")),
    ("mlp.dense_h_to_4h.weight", ("mlp", "wi_kernel")),
    ("mlp.dense_h_to_4h.bias", ("mlp", "wi_bias")),
    ("mlp.dense_4h_to_h.weight", ("mlp", "wo_kernel")),
    ("mlp.dense_4h_to_h.bias", ("mlp", "wo_bias")),
)
_TOP_MAP = (
    ("word_embeddings.weight", ("word_embeddings",)),
    ("transformer.position_embeddings.weight", ("position_embeddings",)),
    ("transformer.block_position_embeddings.weight", ("block_position_embeddings",)),
    ("transformer.final_layernorm.weight", ("final_layernorm", "scale")),
    ("transformer.final_layernorm.bias", ("final_layernorm", "bias")),
)


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not form the model its config describes."""


def count_layers(tensors: dict[str, np.ndarray]) -> int:
  indices = {int(m.group(1)) for key in tensors
             for m in [re.match(r"transformer\.layers\.(\d+)\.", key)] if m}
  if not indices:
    raise CheckpointMismatchError("no key transformer.layers.0.* in the checkpoint: it is not a "
                                  "GLM model (or its keys have an unknown prefix).")
  missing = sorted(set(range(max(indices) + 1)) - indices)
  if missing:
    raise CheckpointMismatchError(f"transformer.layers.{missing[0]}.* is missing (the checkpoint "
                                  f"has layers up to {max(indices)}).")
  return max(indices) + 1


def _require(tensors: dict, key: str, shape: tuple) -> np.ndarray:
  if key not in tensors:
    raise CheckpointMismatchError(f"{key} is missing from the checkpoint.")
  value = tensors[key]
  if tuple(value.shape) != tuple(shape):
    raise CheckpointMismatchError(f"{key} has shape {tuple(value.shape)}, but the model "
                                  f"config implies {tuple(shape)}.")
  return value


def expected_shapes(model_config) -> dict[str, tuple]:
  """Every original key of this model and its shape."""
  hidden, ffn, rows = model_config.hidden_size, model_config.ffn, model_config.max_position + 1
  shapes = {"word_embeddings.weight": (model_config.vocab_size, hidden),
            "transformer.position_embeddings.weight": (rows, hidden),
            "transformer.block_position_embeddings.weight": (rows, hidden),
            "transformer.final_layernorm.weight": (hidden,),
            "transformer.final_layernorm.bias": (hidden,)}
  per_layer = {"input_layernorm.weight": (hidden,), "input_layernorm.bias": (hidden,),
               "attention.query_key_value.weight": (3 * hidden, hidden),
               "attention.query_key_value.bias": (3 * hidden,),
               "attention.dense.weight": (hidden, hidden), "attention.dense.bias": (hidden,),
               "post_attention_layernorm.weight": (hidden,),
               "post_attention_layernorm.bias": (hidden,),
               "mlp.dense_h_to_4h.weight": (ffn, hidden), "mlp.dense_h_to_4h.bias": (ffn,),
               "mlp.dense_4h_to_h.weight": (hidden, ffn), "mlp.dense_4h_to_h.bias": (hidden,)}
  for index in range(model_config.num_layers):
    shapes.update({LAYER.format(index) + key: shape for key, shape in per_layer.items()})
  return shapes


def _to_glmjax(suffix: str, value: np.ndarray, heads: int) -> np.ndarray:
  if suffix == "attention.query_key_value.weight":
    hidden = value.shape[1]
    return value.T.reshape(hidden, 3, heads, hidden // heads)
  if suffix == "attention.query_key_value.bias":
    return value.reshape(3, heads, -1)
  if suffix == "attention.dense.weight":
    hidden = value.shape[0]
    return value.T.reshape(heads, hidden // heads, hidden)
  if suffix.endswith(".weight") and value.ndim == 2:  # Linear [out, in] -> [in, out]
    return value.T
  return value


def _from_glmjax(suffix: str, value: np.ndarray) -> np.ndarray:
  if suffix == "attention.query_key_value.weight":
    return value.reshape(value.shape[0], -1).T
  if suffix == "attention.query_key_value.bias":
    return value.reshape(-1)
  if suffix == "attention.dense.weight":
    return value.reshape(-1, value.shape[-1]).T
  if suffix.endswith(".weight") and value.ndim == 2:
    return value.T
  return value


def to_params(tensors: dict[str, np.ndarray], model_config, *, consume: bool = False
              ) -> tuple[dict, list[str]]:
  """glmjax params (scan_layers layout, float32 unless model.param_dtype says otherwise) and
  the checkpoint keys that were not used. consume=True takes each tensor out of `tensors` as it
  is converted, so the source and its converted copy are never both held whole (a 16-bit
  GLM-10B's 20 GB beside its 40 GB of float32 params)."""
  shapes = expected_shapes(model_config)
  for key, shape in shapes.items():
    _require(tensors, key, shape)
  unused = sorted(set(tensors) - set(shapes))
  take = tensors.pop if consume else tensors.__getitem__
  dtype = np.dtype(model_config.param_dtype)
  params: dict[str, Any] = {}
  for key, path in _TOP_MAP:
    _set(params, path, np.asarray(take(key), dtype))
  heads, count = model_config.num_heads, model_config.num_layers
  stacked: dict[str, Any] = {}
  for suffix, path in _LAYER_MAP:
    # Each layer is cast as it is written into the stack: no float32 copy of every layer
    # beside the stack itself (twice the largest weight's bytes, 26 GB at GLM-10B's).
    value = None
    for index in range(count):
      layer = _to_glmjax(suffix, np.asarray(take(LAYER.format(index) + suffix)), heads)
      if value is None:
        value = np.empty((count, *layer.shape), dtype)
      value[index] = layer
    _set(stacked, path, value)
  params["layers"] = stacked
  return params, unused


def from_params(params: dict, model_config, dtypes: dict[str, str] | None = None, *,
                consume: bool = False) -> dict[str, np.ndarray]:
  """Original keys from glmjax params (scan_layers layout); each tensor cast to its dtype in
  `dtypes` (the imported checkpoint's, by key), else kept in the parameters' dtype.
  consume=True takes each parameter out of `params` once its tensors are made (as to_params)."""
  dtypes = dtypes or {}

  def cast(key, value):
    return np.asarray(value).astype(dtypes[key]) if key in dtypes else np.asarray(value)

  take = _pop if consume else _get
  tensors = {key: cast(key, take(params, path)) for key, path in _TOP_MAP}
  for suffix, path in _LAYER_MAP:
    stacked = take(params["layers"], path)
    for index in range(model_config.num_layers):
      key = LAYER.format(index) + suffix
      tensors[key] = cast(key, _from_glmjax(suffix, np.asarray(stacked[index])))
  return tensors


def _set(tree: dict, path: tuple, value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple):
  for name in path:
    tree = tree[name]
  return tree


def _pop(tree: dict, path: tuple):
  return _get(tree, path[:-1]).pop(path[-1])
