"""What the convert tests share: the tiny GLM whose original checkpoints they write (through
tests/original_glm.py), and running glmjax's commands as a user would."""
import importlib.util
import os
import subprocess
import sys

import original_glm as og

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, H, L, HEADS, MSL = 200, 32, 2, 4, 16  # V not a multiple of 128: kept as it is


def random_weights(seed=0):
  """The original model's state dict (torch tensors) for the tiny GLM above."""
  return og.random_state_dict(V, H, L, HEADS, MSL, seed=seed)


def continue_config(workdir):
  """What `train --config=WORKDIR/config.py` starts from, before command-line overrides."""
  spec = importlib.util.spec_from_file_location("imported_config", os.path.join(workdir,
                                                                                "config.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run_command(module, *args, temp):
  """`python -m module args`; a failure's traceback file goes to the folder `temp`."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(temp)},
                        capture_output=True, text=True, check=False, timeout=300)


def saved_tokenizer(workdir):
  """The tokenizer_info recorded with a workdir's step-0 parameters (None: not recorded)."""
  from glmjax import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  checkpointer = checkpoint_lib.Checkpointer(checkpoint_lib.in_workdir(str(workdir)), every=0,
                                             keep=1)
  try:
    return checkpointer.read_metadata(0).get("tokenizer")
  finally:
    checkpointer.close()
