"""The GLM model's parameter trees: the layer stack in its two layouts (scan_layers on and off)
and the view of the parameters in the compute dtype that the train step differentiates."""
import jax
import jax.numpy as jnp
from flax import linen as nn

from glmjax.model.model_config import ModelConfig


def in_compute_dtype(params: dict, cfg: ModelConfig) -> dict:
  """Unboxed `params` with every projection's kernel (the `_kernel` leaves that glm.py's
  `_projection` makes) narrowed to the compute dtype, where it is narrower. The model casts
  them so before any use, so this view gives the same values. Differentiated with respect to
  it, they get their gradients in the compute dtype, as the matmuls produce them anyway: stored
  and stacked per layer, and read by the optimizer's passes, at half float32's bytes; widened
  back to the parameters' dtype, they are the same gradients. The biases stay: their gradients
  are float32 sums over the tokens (glm.add_bias), which a narrower dtype would round."""
  if any(isinstance(leaf, nn.meta.AxisMetadata) for leaf in
         jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))):
    raise TypeError("in_compute_dtype takes unboxed parameters: pass nn.meta.unbox(params).")
  narrower = jnp.dtype(cfg.compute_dtype).itemsize

  def view(path, leaf):
    name = getattr(path[-1], "key", "") if path else ""
    cast = (isinstance(name, str) and name.endswith("_kernel")
            and narrower < leaf.dtype.itemsize)
    return leaf.astype(cfg.compute_dtype) if cast else leaf
  return jax.tree_util.tree_map_with_path(view, params)


def stack_layers(params: dict, num_layers: int) -> dict:
  """scan_layers=False params (layers_0, layers_1, ...) -> scan_layers=True params (layers)."""
  layers = [params[f"layers_{i}"] for i in range(num_layers)]
  rest = {key: value for key, value in params.items() if not key.startswith("layers_")}
  return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layers(params: dict, num_layers: int) -> dict:
  """scan_layers=True params -> scan_layers=False params."""
  rest = {key: value for key, value in params.items() if key != "layers"}
  for i in range(num_layers):
    rest[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  return rest
