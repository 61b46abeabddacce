"""The shape of the code stays easy to see: small modules, imports in one direction."""
import ast
import inspect
import os
import re

import pytest

from glmjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "glmjax")
MAX_LINES = 400
# The lower layers: they import each other and outside libraries, never another glmjax module.
LOWER = ("glmjax.model", "glmjax.data")


def _modules():
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        yield dotted.removesuffix(".__init__"), path


def _imports(path):
  tree = ast.parse(open(path, encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("module, path", sorted(_modules()))
def test_every_module_stays_under_400_lines(module, path):
  with open(path, encoding="utf-8") as f:
    assert sum(1 for _ in f) <= MAX_LINES, module


def test_the_model_and_data_layers_import_nothing_above_them():
  offenders = []
  for module, path in _modules():
    if module.startswith(LOWER):
      offenders += [f"{module} imports {name}" for name in _imports(path)
                    if name.startswith("glmjax.") and not name.startswith(LOWER)
                    and name != "glmjax"]
  assert not offenders, offenders


def test_the_step_imports_no_command():
  commands = ("glmjax.train", "glmjax.aot", "glmjax.bench", "glmjax.generate",
              "glmjax.evaluate", "glmjax.convert")
  for module in ("glmjax.step", "glmjax.loss", "glmjax.loop"):
    path = os.path.join(REPO, *module.split(".")) + ".py"
    assert not [name for name in _imports(path) if name.startswith(commands)], module


def test_the_step_does_no_logging_and_waits_for_no_other_host():
  # Start-up decisions that log or talk to other hosts live in attention_choice.py.
  path = os.path.join(REPO, "glmjax", "step.py")
  impure = [name for name in _imports(path)
            if name == "logging" or name.endswith("multihost_utils")]
  assert not impure, impure


def test_every_config_field_has_a_one_line_comment():
  missing = []
  for section in ("model", "data", "optim", "mesh", "train", "checkpoint"):
    source = inspect.getsource(getattr(config_lib, f"{section}_defaults"))
    fields = [(match.group(1), line) for line in source.splitlines()
              if (match := re.match(r"\s+(\w+)=", line))]
    assert {name for name, _ in fields} == set(getattr(config_lib, f"{section}_defaults")())
    missing += [f"{section}.{name}" for name, line in fields if "  # " not in line]
  seed_line = inspect.getsource(config_lib.default_config).split("config.seed =")[1].splitlines()[0]
  missing += [] if "  # " in seed_line else ["seed"]
  assert not missing, missing


def test_the_comment_of_every_choice_field_lists_all_its_choices():
  unlisted = []
  for field, choices in config_lib.CHOICES.items():
    section, name = field.split(".")
    source = inspect.getsource(getattr(config_lib, f"{section}_defaults"))
    line = next(line for line in source.splitlines() if re.match(rf"\s+{name}=", line))
    comment = line.split("  # ", 1)[1]
    unlisted += [f"{field}: {choice}" for choice in choices
                 if choice and not re.search(rf"(?<!\w){re.escape(choice)}(?!\w)", comment)]
  assert not unlisted, unlisted
