"""A workdir read back for use: its config, the model, the newest parameters and the tokenizer.

A workdir is a training run's (config.json and checkpoints/) or one that
`python -m glmjax.convert import` wrote (the same files; a parameters-only checkpoint at step
0 and the tokenizer's files under tokenizer/). `generate`, `evaluate`, `convert export` and
`convert.load_pretrained` read both kinds through `load`. An import given no tokenizer records
NO_TOKENIZER as its data.tokenizer_path, which tokenizers.load_tokenizer refuses wherever text
would be tokenized (`require_tokenizer` adds the re-import command for generate and evaluate);
the parameters load as ever.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from glmjax import attention_choice
from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import parallel, params_restore, paths
from glmjax import step as step_lib
from glmjax.data import tokenizers
from glmjax.model import GLM, ModelConfig
from glmjax import workdir as workdir_lib
from glmjax.workdir import CONFIG_FILE

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"  # what `convert import` read: only an imported workdir has one
NO_TOKENIZER = tokenizers.NO_TOKENIZER  # an import's data.tokenizer_path when it had none


@dataclasses.dataclass(frozen=True)
class Pretrained:
  workdir: str
  config: ml_collections.ConfigDict  # the run's config; fields it predates read as defaults
  model_config: ModelConfig          # attention resolved for this host
  params: Any                        # sharded over `mesh` by the config's logical rules
  step: int                          # the checkpoint's step
  mesh: Mesh
  rules: tuple
  corpus: dict | None = None         # workdir.corpus_record saved with it (None: an import)
  tokenizer: dict | None = None      # tokenizers.tokenizer_info saved with it (None: older)


def read_config(workdir: str, *, warn: bool = True) -> ml_collections.ConfigDict:
  """WORKDIR/config.json over the defaults; unknown saved fields are ignored (with a warning
  unless `warn` is False: a caller that reads the config twice warns once)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"--workdir={workdir}: no {CONFIG_FILE} there; give the workdir of "
                            "a training run or of `python -m glmjax.convert import`.")
  try:
    saved = json.loads(path.read_text(encoding="utf-8"))
  except ValueError as error:
    raise ValueError(f"{path} is not valid JSON ({error}); restore it from the checkpoint's "
                     "metadata or re-run the import.") from error
  config = config_lib.default_config()
  ignored = []
  for section, values in saved.items():
    if section not in config:
      ignored.append(section)
    elif isinstance(values, dict):
      for field, value in values.items():
        if field in config[section]:
          config[section][field] = tuple(map(tuple, value)) if field == "rules" else value
        else:
          ignored.append(f"{section}.{field}")
    else:
      config[section] = values
  if ignored and warn:
    log.warning("%s: fields this version does not know are ignored: %s", path,
                ", ".join(ignored[:8]))
  return config


def local_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """The run's mesh if it fits this host's devices, else FSDP over as many of them as split
  the parameters (the rest replicate them over mesh.data), all of them where that works."""
  count = jax.device_count()
  axes = ModelConfig.from_config(config.model).parameter_axes()
  rules = parallel.logical_rules(config.mesh)
  slices = parallel.slice_count(jax.devices())

  def splits(mesh_config) -> bool:  # a mesh the arrays' shardings can cut evenly, laid out
    try:                            # with mesh.data across the slices or GPU hosts
      shape = parallel.mesh_shape(mesh_config, count)
    except ValueError:
      return False
    return shape[0] % slices == 0 and parallel.unsplittable_axis(
        axes, dict(zip(parallel.MESH_AXES, shape)), rules) is None

  if splits(config.mesh):
    return parallel.make_mesh(config.mesh)
  # fsdp=-1 alone fails where the count does not divide the hidden size (GLM-10B's 4096 on 6
  # GPUs): the restore then dies in the middle of reading. fsdp=1 always splits.
  fallback = ml_collections.ConfigDict(config.mesh.to_dict())
  for fsdp in sorted((n for n in range(1, count // slices + 1) if count // slices % n == 0),
                     reverse=True):  # on several slices mesh.data crosses them: a multiple
    fallback.update(data=count // fsdp, fsdp=fsdp, tensor=1)
    if splits(fallback):
      break
  log.info("The run's mesh (data=%s, fsdp=%s, tensor=%s) does not split this model over %d "
           "devices; using "
           "fsdp=%d%s.", config.mesh.data, config.mesh.fsdp, config.mesh.tensor, count,
           fallback.fsdp, "" if fallback.fsdp == count else
           f" and data={fallback.data} (the model's sizes split over no more)")
  return parallel.make_mesh(fallback)


def abstract_params(model_config: ModelConfig, mesh: Mesh, rules) -> Any:
  """ShapeDtypeStructs of the parameters with their target shardings (no array is built)."""
  model = GLM(model_config)
  init = lambda rng: model.init(rng, *step_lib.dummy_inputs(1, 8))["params"]  # noqa: E731
  return step_lib.abstract_state(init, step_lib.state_shardings(init, mesh, rules))


def load(workdir: str, *, mesh: Mesh | None = None, attention: str = "auto",
         on_host: bool = False) -> Pretrained:
  """The newest parameters of `workdir`, sharded over `mesh` (default: `local_mesh`), or with
  `on_host` as numpy arrays in host memory (convert export only reads them).

  `attention` replaces the run's model.attention (its pick may be another platform's kernel):
  'auto' picks and checks this host's kernel, for programs that run the full-row forward pass
  (evaluate); 'xla' skips the check, for those that never call a kernel (decoding attends over
  its cache densely; an export only reads the parameters).
  """
  config = read_config(workdir)
  config.model.attention = attention
  config.checkpoint.init_from = ""
  mesh = mesh or local_mesh(config)
  rules = parallel.logical_rules(config.mesh)
  checkpoints = epath.Path(checkpoint_lib.in_workdir(workdir))
  if not checkpoints.is_dir() or not any(p.name.isdigit() for p in checkpoints.iterdir()):
    raise FileNotFoundError(f"--workdir={workdir} has a {CONFIG_FILE} but no checkpoint yet; "
                            "give a workdir whose run has saved one (checkpoint.every).")
  with parallel.activate(mesh, rules):
    model_config = attention_choice.resolved_model_config(config, training=False)
    abstract = abstract_params(model_config, mesh, rules)
    saved = {}  # the checkpoint's metadata, read once by restore_params
    params, step = params_restore.restore_params(
        workdir, abstract, checkpoint_lib.parameter_layout(abstract), field="--workdir",
        check=lambda metadata, _: saved.update(metadata), on_host=on_host)
  log.info("Loaded the parameters of step %d from %s", step, workdir)
  return Pretrained(workdir=workdir, config=config, model_config=model_config, params=params,
                    step=step, mesh=mesh, rules=rules, corpus=saved.get("corpus"),
                    tokenizer=saved.get("tokenizer"))


def tokenizer_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """config.data with a relative tokenizer_path read inside `workdir` when the file is there
  (an imported workdir keeps its tokenizer under tokenizer/, so the folder can move)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  path = data.tokenizer_path
  if (data.tokenizer == "byte" and not path
      and (epath.Path(workdir) / SOURCE_FILE).exists()
      and _imported_tokenizer(workdir) != "byte"):
    # Imports older than NO_TOKENIZER left glmjax's byte default: the model's vocabulary is
    # unknown all the same. (An import stores the byte tokenizer only when a glmjax export
    # recorded it, and says so in its source.json.)
    data.tokenizer_path = NO_TOKENIZER
  elif path and not os.path.isabs(path) and not paths.is_remote(workdir):
    inside = os.path.join(workdir, path)
    if os.path.exists(inside):
      data.tokenizer_path = inside
  elif path and not os.path.isabs(path) and (epath.Path(workdir) / path).exists():
    # A workdir in a bucket (an import copied there): the tokenizer libraries read local files,
    # so its copy is read here, not a same-named path in the current folder.
    data.tokenizer_path = _local_copy(workdir, path)
  return data


def _local_copy(workdir: str, path: str) -> str:
  """`path` (relative to the bucket `workdir`) copied to this machine with the files beside it
  (an import's tokenizer/ folder: a vocab.json's merges.txt); the copy's path. A file at the
  workdir's top level takes only merges.txt along, not the run's other files."""
  inside = epath.Path(workdir) / path
  folder = inside if inside.is_dir() else inside.parent
  top_level = folder == epath.Path(workdir)
  root = tempfile.mkdtemp(prefix="glmjax-tokenizer-")
  atexit.register(shutil.rmtree, root, True)  # the process's own copy: gone when it ends
  local = os.path.join(root, folder.name)
  os.makedirs(local)
  for file in folder.iterdir():
    if file.is_file() and (not top_level or file.name in (inside.name, "merges.txt")):
      with open(os.path.join(local, file.name), "wb") as handle:
        handle.write(file.read_bytes())
  return local if inside.is_dir() else os.path.join(local, inside.name)


def _imported_tokenizer(workdir: str) -> str:
  """The tokenizer kind an import took from a glmjax export's record ('' for any other)."""
  try:
    record = json.loads((epath.Path(workdir) / SOURCE_FILE).read_text(encoding="utf-8"))
    return str(record.get("tokenizer", ""))
  except (OSError, ValueError, AttributeError):
    return ""


def _imported_from(workdir: str) -> str:
  """The checkpoint `convert import` read into `workdir`, for the re-import command we print."""
  try:
    record = json.loads((epath.Path(workdir) / SOURCE_FILE).read_text(encoding="utf-8"))
    return str(record["path"])
  except (OSError, ValueError, KeyError, TypeError):  # any workdir: the message still helps
    return "CHECKPOINT"


def require_tokenizer(data_config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError (one line) when `workdir` was imported without a tokenizer, with the
  re-import command for its source (tokenizers.load_tokenizer refuses the placeholder too, in
  general words, for every other caller)."""
  if data_config.tokenizer_path != NO_TOKENIZER:
    return
  reimport = (f"python -m glmjax.convert import --from={_imported_from(workdir)} "
              "--out=NEW_WORKDIR --tokenizer=PATH")
  raise config_lib.ConfigError(
      f"{workdir} was imported without its tokenizer, and glmjax's byte tokenizer would feed "
      f"the model ids it was not trained on: re-import it with {reimport} (the tokenizer's "
      "file or folder: vocab.txt, vocab.json + merges.txt, a .model or tokenizer.json).")


def workdir_tokenizer(config: ml_collections.ConfigDict, workdir: str):
  """The tokenizer of the run in `workdir` whose config.json is `config` (read_config): before
  the parameters load, too."""
  data = tokenizer_config(config, workdir)
  require_tokenizer(data, workdir)
  return tokenizers.load_tokenizer(data)


def load_tokenizer(pretrained: Pretrained):
  """The tokenizer of its config.json, refused when it is not the one the parameters were
  trained with (check_tokenizer)."""
  tokenizer = workdir_tokenizer(pretrained.config, pretrained.workdir)
  check_tokenizer(pretrained, tokenizer)
  return tokenizer


def check_tokenizer(pretrained: Pretrained, tokenizer) -> None:
  """Refuses a tokenizer other than the one recorded with the parameters: a tokenizer file
  trained again at the same path, or a relative data.tokenizer_path not in the workdir, read
  from the current folder, would give the embeddings other text, silently."""
  workdir_lib.check_tokenizer(
      pretrained.tokenizer, tokenizers.tokenizer_info(tokenizer),
      what=f"The checkpoint of step {pretrained.step} in {pretrained.workdir}",
      fix="Point data.tokenizer_path in its config.json at that tokenizer (a relative path is "
          "read inside the workdir when the file is there, else from the current folder).")


def save(workdir: str, config: ml_collections.ConfigDict, params: Any, *,
         source: str = "", tokenizer: dict | None = None, progress_every_s: float = 0) -> None:
  """Writes a workdir that `load` and `checkpoint.init_from` read: config.json and the
  parameters alone as the checkpoint of step 0 (checksummed like every checkpoint).
  `tokenizer` (tokenizers.tokenizer_info) is recorded with them, as train records its own, so
  that an init_from under another tokenizer is refused. progress_every_s > 0: a line that often
  while the write runs, with the bytes written to a local workdir so far."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  (epath.Path(workdir) / CONFIG_FILE).write_text(text, encoding="utf-8")
  checkpointer = checkpoint_lib.Checkpointer(checkpoint_lib.in_workdir(workdir), every=0,
                                             keep=1, async_save=False)
  try:
    metadata = {"config": json.loads(text), "source": source,
                "param_layout": checkpoint_lib.parameter_layout(params),
                **({"tokenizer": tokenizer} if tokenizer else {})}
    total = sum(np.size(leaf) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(params))
    with _numpy_leaves_written_in_place(), _write_progress(
        checkpoint_lib.in_workdir(workdir), total, progress_every_s):
      checkpointer.save(0, {"params": params}, metadata, force=True)
      checkpointer.wait()
  finally:
    checkpointer.close()


@contextlib.contextmanager
def _write_progress(folder: str, total: int, every_s: float):
  """A line every `every_s` while a write runs: GLM-10B's 40 GB take minutes, and silence looks
  like a hang. The bytes are the folder's (TensorStore writes in pieces of up to 2 GiB)."""
  if every_s <= 0:
    yield
    return
  done, started = threading.Event(), time.monotonic()

  def report():
    while not done.wait(every_s):
      written = "" if paths.is_remote(folder) else f"{_folder_bytes(folder) / 1e9:.2f} of "
      log.info("Writing the parameters: %s%.2f GB after %.0f s", written, total / 1e9,
               time.monotonic() - started)
  thread = threading.Thread(target=report, name="write-progress", daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    thread.join()


def _folder_bytes(folder: str) -> int:
  total = 0
  for root, _, names in os.walk(folder):
    for name in names:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:  # renamed or removed by Orbax since the walk listed it
        pass
  return total


def params_to_host(params: Any) -> dict:
  """The parameters as nested dicts of numpy arrays, each device array freed once copied (the
  caller's tree is then unusable): a GLM-10B's 40 GB are held once, not on the devices (host
  memory, on a CPU) and the host both, as `convert export` needs them."""
  def move(leaf):
    if not isinstance(leaf, jax.Array):
      return leaf
    host = np.array(leaf)
    leaf.delete()
    return host
  return jax.tree.map(move, flax.core.unfreeze(params))


@contextlib.contextmanager
def _numpy_leaves_written_in_place():
  """Orbax copies each numpy leaf before it writes it, so that an asynchronous save cannot see
  the caller change the array afterwards. `save` waits for its write and nothing changes the
  arrays meanwhile: the copy would only double what an import holds (40 GB more for GLM-10B's
  float32 parameters). The handler Orbax had is put back after, so every other save copies;
  the swap is the process's, so two of these saves must not run at once (convert runs one)."""
  handlers = ocp.type_handlers
  before = handlers.get_type_handler(np.ndarray)
  absl_log = logging.getLogger("absl")  # Orbax warns of each override; these two are meant
  absl_log.addFilter(_drop_handler_overrides)
  try:
    handlers.register_type_handler(
        np.ndarray, handlers.NumpyHandler(deepcopy_host_arrays=False), override=True)
    yield
  finally:
    handlers.register_type_handler(np.ndarray, before, override=True)
    absl_log.removeFilter(_drop_handler_overrides)


def _drop_handler_overrides(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith("Type handler registry type")
