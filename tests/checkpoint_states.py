"""Small train states and their metadata for the checkpoint tests (test_checkpoint.py and
test_checkpoint_damage.py): an 8x4 kernel sharded over a 4-device fsdp mesh, Adam's state."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glmjax import checkpoint, step


def state(scale=1.0):
  params = {"dense": {"kernel": jnp.arange(32.0).reshape(8, 4) * scale, "bias": jnp.ones(4)}}
  return step.TrainState(step=jnp.array(3, jnp.int32), params=params,
                         opt_state=optax.adam(1e-3).init(params))


def fsdp_mesh():
  return Mesh(np.array(jax.devices()[:4]).reshape(4), ("fsdp",))


def abstract(train_state, mesh):
  """The restore target: 2-D arrays split over fsdp, the rest replicated."""
  def target(x):
    spec = PartitionSpec("fsdp") if x.ndim == 2 else PartitionSpec()
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))
  return jax.tree.map(target, train_state)


def metadata(train_state):
  return {"config": {"seed": 0}, "param_layout": checkpoint.parameter_layout(train_state.params),
          "state_layout": checkpoint.parameter_layout(train_state)}


def two_checkpoints(directory, keep=2, scaled=False):
  """Saves steps 1 and 2 (states scaled 1 and 2 with `scaled`, else equal) and closes."""
  ckpt = checkpoint.Checkpointer(str(directory), every=1, keep=keep)
  for at in (1, 2):
    ckpt.save(at, state(float(at) if scaled else 1.0), metadata(state()))
  ckpt.close()


def rewrite_metadata(step_dir, change):
  """Rewrites the JSON metadata saved with a checkpoint (the JSON file of its folder)."""
  def is_json(path):
    try:
      return isinstance(json.loads(path.read_text()), dict)
    except ValueError:
      return False
  (path,) = [p for p in (step_dir / checkpoint.METADATA_ITEM).rglob("*")
             if p.is_file() and is_json(p)]
  path.write_text(change(path.read_text()))
