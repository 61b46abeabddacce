"""GLM on a 2x4 (fsdp, tensor) mesh of simulated CPU devices equals the unsharded model, and
keeps its activations and lookups split as the rules say (a TPU slice's program too)."""
import importlib
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import Mesh, PartitionSpec as P

from glmjax import aot, attention_choice, parallel, topology
from glmjax import config as config_lib
from glmjax import model as model_lib
from glmjax import step as step_lib
from glmjax.model import attention

RULES = config_lib.DEFAULT_LOGICAL_AXIS_RULES
LARGE = 1024  # parameters with at least this many elements must be sharded


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()).reshape(1, 2, 4), ("data", "fsdp", "tensor"))


def _glm(config):
  return model_lib.GLM(model_lib.ModelConfig.from_config(config))


def _config():
  config = config_lib.model_defaults()
  config.update(vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, max_position=16,
                dtype="float32", attention="xla", hidden_dropout=0.0, attention_dropout=0.0)
  return config


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 128, (4, 16)), jnp.int32)
  position_ids = jnp.tile(jnp.arange(16, dtype=jnp.int32), (4, 1))
  sep = jnp.array([0, 5, 8, 16], jnp.int32)
  block_ids = jnp.maximum(position_ids - sep[:, None] + 1, 0)
  return tokens, position_ids, block_ids, sep


def _sharded(mesh):
  """The model's parameters made in the rules' shardings, and its logits computed from them."""
  model, batch = _glm(_config()), _batch()
  init = lambda: model.init(jax.random.key(0), *batch)["params"]
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    abstract = jax.eval_shape(init)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, RULES)
    params = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=shardings)()
    return params, jax.jit(lambda p, *b: model.apply({"params": p}, *b))(params, *batch)


def test_sharded_forward_equals_unsharded(mesh):
  model, batch = _glm(_config()), _batch()
  params, sharded_logits = _sharded(mesh)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if math.prod(leaf.shape) >= LARGE:
      assert not leaf.sharding.is_fully_replicated, jax.tree_util.keystr(path)
  host_params = jax.device_get(params)
  logits = jax.jit(lambda p, *b: model.apply({"params": p}, *b))(host_params, *batch)
  assert logits.shape == (4, 16, 128)
  np.testing.assert_allclose(np.asarray(sharded_logits), np.asarray(logits), rtol=1e-5, atol=1e-6)


def test_every_parameter_and_the_logits_are_split_over_the_axes_their_rules_name(mesh):
  params, sharded_logits = _sharded(mesh)
  # Not merely split: each over every mesh axis its dimensions' rules name (the hidden size
  # over fsdp; heads, the MLP's width and the vocabulary over tensor; layers and q/k/v whole).
  specs = {"/".join(k.key for k in path): leaf.sharding.spec
           for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  assert specs == {
      "word_embeddings": P("tensor", "fsdp"), "position_embeddings": P(None, "fsdp"),
      "block_position_embeddings": P(None, "fsdp"),
      "final_layernorm/bias": P(None), "final_layernorm/scale": P(None),
      "layers/attention/qkv_kernel": P(None, "fsdp", None, "tensor", None),
      "layers/attention/qkv_bias": P(None, None, "tensor", None),
      "layers/attention/out_kernel": P(None, "tensor", None, "fsdp"),
      "layers/attention/out_bias": P(None, "fsdp"),
      "layers/mlp/wi_kernel": P(None, "fsdp", "tensor"), "layers/mlp/wi_bias": P(None, "tensor"),
      "layers/mlp/wo_kernel": P(None, "tensor", "fsdp"), "layers/mlp/wo_bias": P(None, "fsdp"),
      **{f"layers/{norm}/{name}": P(None, None) for norm in (
          "input_layernorm", "post_attention_layernorm") for name in ("bias", "scale")}}
  # The logits follow the rules: rows over fsdp, the vocabulary over tensor.
  assert sharded_logits.sharding.spec == P("fsdp", None, "tensor")


def test_kernels_run_per_shard_under_a_mesh(mesh):
  # A kernel (splash, interpret mode) under shard_map over batch (fsdp) and heads (tensor).
  keys = jax.random.split(jax.random.key(0), 4)
  shape = (2, 256, 4, 16)
  q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32) for key in keys)
  sep = jnp.array([77, 200], jnp.int32)

  def outputs_and_grads(implementation):
    def run(q, k, v):
      fn = lambda q, k, v: attention.glm_attention(q, k, v, sep, implementation=implementation)
      out, vjp = jax.vjp(fn, q, k, v)
      return (out,) + vjp(cotangent)
    return jax.jit(run)(q, k, v)

  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    sharded = outputs_and_grads("splash")
  expected = outputs_and_grads("xla")
  for a, b in zip(sharded, expected):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def _backward_temp_bytes_and_hidden_spec(mesh, rules, **model):
  """Temporary bytes per device of the model's backward pass (dropout on), and the spec of its
  final hidden states, under `rules` (and `model` fields)."""
  config = _config()
  config.update(hidden_size=256, max_position=64, hidden_dropout=0.1, **model)
  model = _glm(config)
  tokens = jnp.zeros((8, 64), jnp.int32)
  positions = jnp.tile(jnp.arange(64, dtype=jnp.int32), (8, 1))
  batch = (tokens, positions, positions, jnp.full((8,), 32, jnp.int32))
  init = lambda: model.init(jax.random.key(0), *batch)["params"]
  hidden = lambda p: model.apply({"params": p}, *batch, return_hidden=True, deterministic=False,
                                 rngs={"dropout": jax.random.key(1)})
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(jax.eval_shape(init)), mesh,
                                            rules)
    params = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=shardings)()
    backward = jax.jit(jax.grad(lambda p: jnp.sum(hidden(p) ** 2))).lower(params).compile()
    spec = jax.jit(hidden)(params).sharding.spec
  return backward.memory_analysis().temp_size_in_bytes, spec


def test_the_residual_stream_stays_split_over_the_tensor_axis(mesh):
  """activation_embed -> tensor: LayerNorms, dropout and residual adds run on a quarter of the
  hidden size per device (mesh.tensor=4), not on a copy of all of it."""
  split, spec = _backward_temp_bytes_and_hidden_spec(mesh, RULES)
  assert spec[-1] == "tensor"
  replicated_rules = tuple((name, None if name == "activation_embed" else axes)
                           for name, axes in RULES)
  replicated, replicated_spec = _backward_temp_bytes_and_hidden_spec(mesh, replicated_rules)
  assert len(replicated_spec) < 3 or replicated_spec[-1] is None
  assert split < 0.8 * replicated


@pytest.mark.parametrize("logical, model", [("activation_heads", {}),
                                             ("activation_mlp", {"ffn_size": 4096})])
def test_attention_heads_and_the_mlp_s_width_stay_split_over_the_tensor_axis(mesh, logical,
                                                                             model):
  """activation_heads and activation_mlp -> tensor: q, k, v, the scores and the MLP's
  activations are a quarter per device, not copies (the model's numbers would be the same
  either way: only the memory shows it). The MLP case widens the MLP to 16H so that its
  activations dominate the backward's temporaries."""
  split, _ = _backward_temp_bytes_and_hidden_spec(mesh, RULES, **model)
  replicated, _ = _backward_temp_bytes_and_hidden_spec(
      mesh, tuple((name, None if name == logical else axes) for name, axes in RULES), **model)
  assert split < 0.8 * replicated, (split, replicated)


@pytest.mark.parametrize("tensor", [1, 2])
def test_under_fsdp_a_tpu_slice_gathers_the_embedding_tables_never_the_batch_s_token_ids(tensor):
  """glm._gathered_over_embed: the lookups gather each table over fsdp. Left to itself, XLA
  (for a v5e-8, fsdp=8) sent every device all of the batch's ids instead, to look up a slice of
  the hidden size for all rows, and resharded the rows (and their cotangent) to match. It
  gathers the small position tables itself; the constraint keeps that so at any size. With a
  tensor axis each device gathers its own share of the vocabulary, never the whole table, and
  the lookup's gradient is added into each device's own rows (glm.py keeps the looked-up rows
  whole across the hidden size before the residual stream splits them)."""
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(vocab_size=1024, hidden_size=128, num_layers=1, num_heads=2,
                      max_position=128, attention="xla")
  config.data.update(seq_len=128, batch_size=16)
  config.mesh.update(data=1, fsdp=8 // tensor, tensor=tensor)
  devices = topology.slice_devices(topology.parse_slice("v5e-8"))
  mesh, rules = parallel.make_mesh(config.mesh, devices), parallel.logical_rules(config.mesh)
  model_config = attention_choice.resolved_model_config(config, platform="tpu",
                                                        device=devices[0])
  # pylint: disable-next=protected-access  (a compile-only program cannot be cached)
  with parallel.activate(mesh, rules), aot._no_persistent_cache():
    program = step_lib.build_program(config, mesh, rules, model_config)
    hlo = program.compile_train_step(config, mesh).as_text()
  gathered = re.findall(r"= (\w+)\[([\d,]+)\]\S* all-gather(?:-start)?\(", hlo)
  elements = {(dtype, math.prod(int(n) for n in shape.split(","))) for dtype, shape in gathered}
  # The position table whole, the word embeddings' rows of this device's vocabulary shard.
  assert ("f32", 1024 // tensor * 128) in elements and ("f32", 129 * 128) in elements
  assert tensor == 1 or all(n != 1024 * 128 for _, n in elements)  # in no dtype
  # Nor does any collective carry the gradient of all 1024 rows of the word table, added into
  # every row on each device and then moved (an all-to-all of [2, 512, 64] under jax 0.10's
  # XLA, the whole [1024, 128] gathered under 0.11's), where each device can add its rows'
  # cotangent into its own rows. Async starts' tuples and TPU's fused collectives count too.
  collective = re.compile(r"= (.+?) (?:(?:all-gather|all-reduce|reduce-scatter|all-to-all|"
                          r"collective-permute)(?:-start)?\(|fusion\(.*calls=%all-)")
  shapes = [dims for line in hlo.splitlines() if (found := collective.search(line))
            for dims in re.findall(r"\w+\[([\d,]+)\]", found.group(1))]
  every_row = [dims for dims in shapes if math.prod(map(int, dims.split(",")[:-1])) == 1024]
  assert tensor == 1 or not every_row, every_row
  # The telling one: without the gather XLA also gathers the table (for the tied logits, in
  # bfloat16), but it sends every device all of the batch's ids as well.
  assert ("s32", 16 * 128) not in elements
