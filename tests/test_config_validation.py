"""Bad configs fail at start-up with messages that name the field."""
import importlib
import re

import jax
import pytest

from glmjax import config as config_lib
from glmjax import parallel


def _local():
  return importlib.import_module("configs.base").get_config("local")


@pytest.mark.parametrize("field, value, message", [
    ("model.num_heads", 3, "model.hidden_size=128 is not divisible by model.num_heads=3"),
    ("model.position_encoding", "alibi", "model.position_encoding='alibi'"),
    ("model.max_position", 16, "model.max_position=16 < data.seq_len"),
    ("optim.grad_accum_steps", 3, "optim.grad_accum_steps=3"),
    ("optim.schedule", "exp", "optim.schedule='exp'"),
    # '' (not set) is named as itself, not as an empty gap in the list.
    ("data.source", "bogus", "data.source='bogus': choose one of '', builtin, files"),
    # aot and bench load no tokenizer: a layout's typo is caught here or not before training.
    ("data.tokenizer_vocab", "gtp2", "data.tokenizer_vocab='gtp2': choose one of '', "),
    ("model.hidden_dropout", 1.5, "model.hidden_dropout"),
    ("optim.learning_rate", float("nan"), "optim.learning_rate=nan: must be a finite number"),
    ("optim.grad_clip", float("inf"), "optim.grad_clip=inf: must be a finite number"),
    ("optim.warmup_ratio", 1.5, "optim.warmup_ratio=1.5: must be in \\[0, 1]"),
    ("optim.decay_steps", 0, "optim.decay_steps=0: must be > 0"),
    ("checkpoint.every", -1, "checkpoint.every=-1: must be >= 0"),
    ("checkpoint.keep", 0, "checkpoint.keep=0: must be >= 1"),
    # The objective recipe, checked before any data is read (aot and bench refuse it as well).
    ("data.blank_prob", 0.5, "data.blank_prob \\+ data.sentence_prob \\+ data.document_prob = "
     "0.5 \\+ 0.0 \\+ 0.0 = 0.5: the objective probabilities must be >= 0 and sum to 1"),
    ("data.mask_ratio", 0.6, "data.mask_ratio=0.6: must be in (0, 0.5]"),
    ("data.poisson_lambda", 0.0, "data.poisson_lambda=0.0: must be > 0"),
    ("data.max_span_length", 0, "data.max_span_length=0: must be >= 1"),
    ("data.gen_min_ratio", 0.0, "data.gen_min_ratio=0.0: must be in (0, 1]"),
    ("data.single_span_prob", 1.5, "data.single_span_prob=1.5: must be in \\[0, 1]"),
    ("data.max_span_length", 200, "data.seq_len=128 is too small to hold the spans of a row"),
    # The first value past each range's end: a dropout of 1 zeroes every activation, a held-out
    # share of 1 leaves nothing to train on, a learning rate of 0 trains nothing.
    ("model.hidden_dropout", 1.0, "model.hidden_dropout=1.0: must be in \\[0, 1\\)"),
    ("model.attention_dropout", 1.0, "model.attention_dropout=1.0: must be in \\[0, 1\\)"),
    ("data.eval_fraction", 1.0, "0 < data.eval_fraction < 1 (got 1.0\\)"),
    ("train.eval_batches", 0, "train.eval_batches >= 1 (got 0\\).*train.eval_every=0"),
    ("optim.grad_accum_steps", 0, "optim.grad_accum_steps=0: must be a positive integer"),
    ("optim.learning_rate", 0.0, "optim.learning_rate=0.0: must be > 0"),
    ("optim.eps", 0.0, "optim.eps=0.0: must be > 0"),
    ("optim.b1", 1.0, "optim.b1=1.0: must be in \\[0, 1\\)"),
    ("optim.b2", 1.5, "optim.b2=1.5: must be in \\[0, 1\\)"),
    ("optim.b2", -0.1, "optim.b2=-0.1: must be in \\[0, 1\\)"),
    ("optim.weight_decay", -0.1, "optim.weight_decay=-0.1: must be >= 0 (0 turns it off\\)"),
    ("optim.grad_clip", -1.0, "optim.grad_clip=-1.0: must be >= 0 (0 turns it off\\)"),
    ("train.loss_chunk", 0, "train.loss_chunk=0: must be a positive integer"),
    ("checkpoint.snapshot_parts", 0, "checkpoint.snapshot_parts=0: must be a positive integer"),
])
def test_bad_field_is_named(field, value, message):
  config = _local()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")):
    config_lib.validate(config, num_devices=8)


def test_the_row_length_a_too_short_refusal_asks_for_is_accepted():
  config = _local()
  config.data.update(max_span_length=40, seq_len=32)
  with pytest.raises(config_lib.ConfigError, match="data.seq_len=32 is too small") as refused:
    config_lib.validate(config)
  asked = int(re.search(r"raise data.seq_len to at least (\d+)", str(refused.value)).group(1))
  config.data.seq_len = asked
  config_lib.validate(config)  # what the message asks for is enough
  config.data.seq_len = asked - 1
  with pytest.raises(config_lib.ConfigError, match=f"data.seq_len={asked - 1} is too small"):
    config_lib.validate(config)


def test_a_vocabulary_not_a_multiple_of_128_is_accepted_and_train_warns_of_it_once(caplog):
  # An imported checkpoint keeps its vocabulary (its function must not change); padding is
  # only advice, given once by the command (validate runs more than once at start-up).
  from glmjax import train
  config = _local()
  config.model.vocab_size = 30600
  config_lib.validate(config, num_devices=8)
  assert "multiple of 128" not in caplog.text
  train._inputs(config)  # pylint: disable=protected-access
  assert caplog.text.count("model.vocab_size=30600 is not a multiple of 128") == 1
  config.model.vocab_size = 30592
  assert config_lib.vocab_size_warning(config.model) is None


def test_batch_not_divisible_by_data_parallel_size():
  config = _local()
  config.data.batch_size = 12
  with pytest.raises(config_lib.ConfigError, match="data-parallel size 8"):
    config_lib.validate(config, num_devices=8, batch_parallelism=8)


def test_mesh_not_matching_device_count():
  config = _local()
  config.mesh.update(data=2, fsdp=2, tensor=1)
  with pytest.raises(config_lib.ConfigError, match="there are 8 devices"):
    config_lib.validate(config, num_devices=8)
  config.mesh.update(data=-1, fsdp=3, tensor=1)
  with pytest.raises(config_lib.ConfigError, match="cannot be split"):
    config_lib.validate(config, num_devices=8)


@pytest.mark.parametrize("mesh, message", [
    ({"data": 1, "fsdp": 1, "tensor": 8},  # 4 heads in :local
     r"model.num_heads = 4 cannot be split over mesh.tensor=8 \(the parameters' 'heads' axis"),
    ({"data": 1, "fsdp": 8, "tensor": 1, "hidden_size": 132, "num_heads": 4},
     r"model.hidden_size = 132 cannot be split over mesh.fsdp=8"),
    # The MLP width named by the field that set it (ffn_size here, not 4 x hidden_size).
    ({"data": 1, "fsdp": 1, "tensor": 8, "num_heads": 8, "ffn_size": 100},
     r"model.ffn_size = 100 cannot be split over mesh.tensor=8"),
])
def test_a_mesh_that_cannot_split_a_parameter_axis_is_refused_before_anything_runs(mesh,
                                                                                    message):
  """Not an IndivisibleError with a traceback after the data is read (or, in aot, exit 1, which
  means "does not fit")."""
  config = _local()
  for field, value in mesh.items():
    section = config.model if field in ("hidden_size", "num_heads", "ffn_size") else config.mesh
    section[field] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config, num_devices=8)


@pytest.mark.parametrize("rules", [("foo",), ("embed", "fsdp"), (("embed",),),
                                   (("embed", 3),), (("embed", ("fsdp", 3)),), None, (None,)],
                         ids=["a word", "one pair, not a tuple of them", "a name alone",
                              "an axis that is a number", "axes holding a number", "None",
                              "a None rule"])
def test_mesh_rules_that_are_not_name_axes_pairs_are_refused_naming_the_field(rules):
  config = _local()
  config.mesh.rules = rules
  with pytest.raises(config_lib.ConfigError, match=r"^mesh.rules: .* is not a tuple of \(logical "
                                                   r"name, mesh axis, axes or None\) pairs"):
    config_lib.validate(config)


def test_mesh_rules_are_read_as_flax_reads_them():
  """A name's first rule counts (later ones are fallbacks); a mesh axis that does not exist is
  named; rotary models have no position table to split."""
  config = _local()
  config.mesh.update(data=1, fsdp=1, tensor=8)
  config.model.update(num_heads=8, hidden_size=256)  # every axis divides by 8 but 'position'
  config.mesh.rules = (("position", None), ("position", "tensor"),
                       *config_lib.DEFAULT_LOGICAL_AXIS_RULES)
  config_lib.validate(config, num_devices=8)  # max_position + 1 = 129 is never split
  config.mesh.rules = (("position", "tensor"), *config_lib.DEFAULT_LOGICAL_AXIS_RULES)
  with pytest.raises(config_lib.ConfigError, match=r"model.max_position \+ 1 = 129"):
    config_lib.validate(config, num_devices=8)
  config.model.position_encoding = "rope"
  config_lib.validate(config, num_devices=8)
  config.mesh.rules = (("heads", "model"), *config_lib.DEFAULT_LOGICAL_AXIS_RULES)
  with pytest.raises(config_lib.ConfigError, match=r"mesh.rules maps 'heads' to 'model', which "
                     r"is not a mesh axis"):
    config_lib.validate(config, num_devices=8)


@pytest.mark.parametrize("overrides", [
    {},
    {"mlp": "geglu", "ffn_size": 200, "vocab_size": 400},
    {"position_encoding": "rope", "num_layers": 3},
])
def test_the_parameter_axes_validation_checks_are_the_ones_glm_s_parameters_have(overrides):
  from flax import linen as nn  # pylint: disable=import-outside-toplevel
  from glmjax import model as model_lib, optim, step  # pylint: disable=import-outside-toplevel
  config = _local()
  config.model.update(overrides)
  model_config = model_lib.ModelConfig.from_config(config.model)
  init_fn = step.make_init_fn(model_lib.GLM(model_config), optim.make_optimizer(config.optim),
                              config.data.seq_len)
  boxed = jax.eval_shape(init_fn, jax.random.key(0))
  shapes = jax.eval_shape(lambda rng: nn.meta.unbox(init_fn(rng)), jax.random.key(0))
  specs = jax.tree.leaves(nn.get_partition_spec(boxed),
                          is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  used = {(name, dim) for spec, shape in zip(specs, jax.tree.leaves(shapes))
          for name, dim in zip(spec, shape.shape) if name is not None}
  axes = model_config.parameter_axes()
  assert {(name, axes[name][0]) for name, _ in used} == used  # every axis named, right size


def test_mesh_fills_minus_one():
  config = _local()
  config.mesh.update(data=-1, fsdp=2, tensor=2)
  assert parallel.mesh_shape(config.mesh, 8) == (2, 2, 2)
  mesh = parallel.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_shipped_configs_are_valid():
  for name in ("base", "large", "glm_2b", "glm_10b"):
    module = importlib.import_module(f"configs.{name}")
    config_lib.validate(module.get_config(), num_devices=8)
    config_lib.validate(module.get_config("local"), num_devices=8, batch_parallelism=8)


def test_the_model_refuses_what_validation_refuses_from_the_same_lists():
  """One list per choice: validation reads the model's own lists, and a value config.validate
  rejects, ModelConfig rejects too."""
  from glmjax.model import ModelConfig  # pylint: disable=import-outside-toplevel
  from glmjax.model import model_config  # pylint: disable=import-outside-toplevel
  for field, choices in (("position_encoding", model_config.POSITION_ENCODINGS),
                         ("norm", model_config.NORMS), ("mlp", model_config.MLPS),
                         ("remat", model_config.REMATS), ("dtype", model_config.DTYPES)):
    assert config_lib.CHOICES[f"model.{field}"] is choices
  for field in ("position_encoding", "norm", "mlp", "activation", "remat", "attention",
                "dtype", "param_dtype"):
    config = _local()
    config.model[field] = "nonsense"
    with pytest.raises(config_lib.ConfigError, match=f"model.{field}='nonsense'"):
      config_lib.validate(config)
    with pytest.raises(ValueError, match=f"model.{field}='nonsense'"):
      ModelConfig.from_config(config.model)


def test_the_model_refuses_a_target_platform_that_jax_does_not_name_so():
  # Set by aot and attention_choice, not by a user: 'cuda' (jax says gpu) takes off-GPU paths.
  from glmjax.model import ModelConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="model.target_platform='cuda'"):
    ModelConfig(target_platform="cuda")


def test_evaluation_needs_held_out_data():
  config = _local()
  config.data.eval_fraction = 0.0
  with pytest.raises(config_lib.ConfigError, match="data.eval_fraction"):
    config_lib.validate(config)
  config.train.eval_every = 0  # no evaluation: no held-out split needed
  config_lib.validate(config)


@pytest.mark.parametrize("name, arg, allowed", [("base", "lcoal", "local"),
                                                ("glm_10b", "stage2,locl", "stage2, local")])
def test_a_mistyped_config_argument_is_refused_naming_the_ones_the_config_takes(name, arg,
                                                                                allowed):
  get_config = importlib.import_module(f"configs.{name}").get_config
  with pytest.raises(config_lib.ConfigError, match=f"config argument '{arg.split(',')[-1]}' "
                                                   f"is not one of this config's: {allowed}"):
    get_config(arg)
  assert get_config("local").train.steps == _local().train.steps  # the real word still works


def test_a_rule_that_splits_activation_rows_unlike_the_input_batches_is_refused():
  """The pipeline places rows over (data, fsdp); activations split otherwise would be resharded
  at every step."""
  config = _local()
  config.mesh.rules = tuple((name, "data" if name == "activation_batch" else axes)
                            for name, axes in config.mesh.rules)
  with pytest.raises(config_lib.ConfigError,
                     match=r"mesh.rules maps 'activation_batch' to \('data',\), but batch rows "
                           r"are built and placed over \('data', 'fsdp'\)"):
    config_lib.validate(config, num_devices=8)
  config.mesh.rules = tuple((name, ["data", "fsdp"] if name == "activation_batch" else axes)
                            for name, axes in config.mesh.rules)  # as a JSON config gives it
  config_lib.validate(config, num_devices=8)
  config.mesh.rules = tuple(rule for rule in config.mesh.rules if rule[0] != "activation_batch")
  with pytest.raises(config_lib.ConfigError, match="mesh.rules has no 'activation_batch' rule"):
    config_lib.validate(config, num_devices=8)


def test_rope_2d_with_a_head_dim_not_a_multiple_of_four_is_refused_when_built_directly():
  # Built without config.validate (a library user, a converter): rope_2d rotates each half of a
  # head by its own ids, each half a rotary embedding of even size; a head dim of 6 would fail
  # deep in the first forward pass instead of by name here.
  from glmjax.model import ModelConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError,
                     match=r"needs a head dim divisible by 4 \(hidden_size/num_heads = 6\)"):
    ModelConfig(hidden_size=12, num_heads=2, position_encoding="rope_2d")
  ModelConfig(hidden_size=12, num_heads=2, position_encoding="rope")  # 6 is even: accepted


def test_a_model_config_built_directly_refuses_heads_that_do_not_divide_the_width_or_a_size_of_0():
  # Built without config.validate (a library user, a converter): 3 heads of 10 // 3 = 3 dims
  # would give a model whose attention silently spans 9 of the 10 hidden dims.
  from glmjax.model import ModelConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="hidden_size=10 is not divisible by model.num_heads=3"):
    ModelConfig(hidden_size=10, num_heads=3)
  # A size of 0 is named, not a ZeroDivisionError from the check above.
  for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position"):
    with pytest.raises(ValueError, match=rf"^model.{field}=0: must be a positive integer"):
      ModelConfig(**{field: 0})
  with pytest.raises(ValueError, match=r"^model.ffn_size=-1: must be 0 \(4 \* hidden_size\)"):
    ModelConfig(ffn_size=-1)


def test_the_closed_ends_of_each_documented_range_are_accepted():
  # Each setting sits on the inclusive end of the range its field documents: refusing it would
  # stop a valid run (warmup over the whole horizon, a constant-tail schedule, evaluation or
  # checkpoints off, one kept checkpoint, one micro-batch per row, positions up to seq_len).
  for section, name, value in (("optim", "warmup_ratio", 1.0), ("optim", "final_ratio", 1.0),
                               ("optim", "warmup_ratio", 0.0), ("model", "hidden_dropout", 0.0),
                               ("train", "eval_every", 0), ("checkpoint", "every", 0),
                               ("checkpoint", "keep", 1), ("optim", "grad_accum_steps", 16),
                               ("model", "max_position", 128)):
    config = _local()  # data.seq_len=128, data.batch_size=16
    config[section][name] = value
    config_lib.validate(config, num_devices=8)


def test_a_sequence_past_the_position_tables_of_init_from_is_not_told_to_grow_them():
  """Raising model.max_position, the advice for a new model, would make init_from's parameters
  (an import's 513 rows, say) refused next: the fix is a shorter data.seq_len."""
  config = _local()
  config.data.seq_len = 256
  config.checkpoint.init_from = "/runs/glm-large"
  with pytest.raises(config_lib.ConfigError) as raised:
    config_lib.validate(config, num_devices=8)
  assert str(raised.value).startswith(
      "model.max_position=128 < data.seq_len=256: position ids reach seq_len - 1; keep "
      "data.seq_len at most that: the parameters of checkpoint.init_from come with tables of "
      "model.max_position + 1 positions (set model.max_position to that run's, in its "
      "config.json, if it is larger)")
  assert "raise model.max_position" not in str(raised.value)


def test_rotary_positions_need_no_table_as_long_as_the_rows():
  # max_position sizes the learned position tables only; rope has none, so a row longer than
  # max_position is valid with it.
  config = _local()
  config.model.update(position_encoding="rope", max_position=64)
  config_lib.validate(config, num_devices=8)


def test_the_rows_per_micro_batch_must_divide_over_the_data_parallel_devices():
  # 16 rows in 2 micro-batches of 8: fine on 8 devices, not on 16 (a batch of 16 rows would be).
  config = _local()
  config.optim.grad_accum_steps = 2
  config_lib.validate(config, num_devices=8, batch_parallelism=8)
  with pytest.raises(config_lib.ConfigError, match=r"= 8 rows per micro-batch is not divisible "
                                                   r"by the data-parallel size 16"):
    config_lib.validate(config, batch_parallelism=16)


def test_rope_with_an_odd_head_dim_is_refused_when_built_directly():
  # rope rotates dim i with dim i + D/2: an odd head dim has a dim without a partner.
  from glmjax.model import ModelConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError,
                     match=r"needs a head dim divisible by 2 \(hidden_size/num_heads = 3\)"):
    ModelConfig(hidden_size=12, num_heads=4, position_encoding="rope")
  ModelConfig(hidden_size=12, num_heads=4)  # learned positions take any head dim


@pytest.mark.parametrize("where, name, meant, listed", [
    ("train", "eval_evry", "train.eval_every", "glmjax/config.py"),
    ("model", "hiden_size", "model.hidden_size", "glmjax/model/model_config.py")])
def test_a_field_misspelled_in_a_config_file_is_refused_naming_the_field_meant(where, name,
                                                                              meant, listed):
  # A config file's own code adds fields freely (the lock comes after it ran): the typo would be
  # carried along unread while the field meant kept its default. The file named lists the
  # section's fields with their comments (the model's are ModelConfig's).
  config = _local()
  config[where][name] = 50
  with pytest.raises(config_lib.ConfigError,
                     match=rf"^{where}\.{name} is not a config field \(did you mean {meant}\?\)"
                           rf": fix its name in the config file \({re.escape(listed)}\b"):
    config_lib.validate(config)
