"""The shape of the code stays easy to see: small modules, imports in one direction."""
import ast
import inspect
import os
import re

import pytest

from glmjax import config as config_lib
from glmjax.model import model_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "glmjax")
MAX_LINES = 400
MAX_WIDTH = 100
# The lower layers: they import each other, the leaves and outside libraries, no other glmjax
# module.
LOWER = ("glmjax.model", "glmjax.data")
# Small helpers that any layer may import (an error in one line, a bucket path): they import no
# glmjax module.
LEAVES = ("glmjax.error_text", "glmjax.paths")


def _modules():
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        yield dotted.removesuffix(".__init__"), path


def _imports(path, program_block=True):
  """The modules `path` imports; program_block=False leaves out its `if __name__ ==
  "__main__":` block, where a lower module that is also a command (data/prepare.py) starts
  through the commands' shared start-up (glmjax.cli), which no library code reaches."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  if not program_block:
    tree.body = [node for node in tree.body if not _is_program_block(node)]
  # A relative import (`from .. import parallel`) is read as the absolute name it stands for.
  package = os.path.relpath(os.path.dirname(path), REPO).split(os.sep)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = package[:len(package) - node.level + 1] if node.level else []
      module = ".".join(base + ([node.module] if node.module else []))
      yield module
      yield from (f"{module}.{alias.name}" for alias in node.names)


def _is_program_block(node) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
          and isinstance(node.test.comparators[0], ast.Constant)
          and node.test.comparators[0].value == "__main__")


def _launchers():
  folder = os.path.join(REPO, "launch")
  return [(f"launch/{name}", os.path.join(folder, name)) for name in sorted(os.listdir(folder))
          if name.endswith(".py")]


@pytest.mark.parametrize("module, path", sorted(_modules()) + _launchers())
def test_every_module_stays_under_400_lines(module, path):
  with open(path, encoding="utf-8") as f:
    assert sum(1 for _ in f) <= MAX_LINES, module


def test_no_python_line_of_the_package_configs_or_launch_is_wider_than_100_characters():
  paths = [path for _, path in _modules()] + [
      os.path.join(REPO, folder, name) for folder in ("configs", "launch")
      for name in sorted(os.listdir(os.path.join(REPO, folder))) if name.endswith(".py")]
  wide = [f"{os.path.relpath(path, REPO)}:{number} ({len(line)})" for path in paths
          for number, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1)
          if len(line) > MAX_WIDTH]
  assert not wide, wide


def test_the_model_and_data_layers_import_nothing_above_them():
  offenders = []
  for module, path in _modules():
    if module.startswith(LOWER):
      offenders += [f"{module} imports {name}" for name in _imports(path, program_block=False)
                    if name.startswith("glmjax.") and not name.startswith(LOWER)
                    and name not in LEAVES and name != "glmjax"]
  assert not offenders, offenders


def test_the_leaves_import_no_glmjax_module():
  paths = dict(_modules())
  offenders = [f"{leaf} imports {name}" for leaf in LEAVES for name in _imports(paths[leaf])
               if name.startswith("glmjax")]
  assert not offenders, offenders


# The commands, as docs/architecture.md lists them (data.tokenizers' command is its program block).
COMMANDS = ("glmjax.train", "glmjax.aot", "glmjax.fit_table", "glmjax.bench", "glmjax.evaluate",
            "glmjax.generate", "glmjax.convert", "glmjax.data.prepare")


def _command_of(module: str) -> str | None:
  return next((command for command in COMMANDS
               if module == command or module.startswith(command + ".")), None)


def test_no_module_but_a_command_imports_a_command():
  # The step, the services and the lower layers; a command may drive another (fit_table and
  # bench's traffic compile with aot, bench's prepare times data.prepare).
  offenders = [f"{module} imports {name}" for module, path in _modules()
               if _command_of(module) is None
               for name in _imports(path, program_block=False) if _command_of(name)]
  assert not offenders, offenders


def test_the_step_does_no_logging_and_waits_for_no_other_host():
  # Start-up decisions that log or talk to other hosts live in attention_choice.py.
  path = os.path.join(REPO, "glmjax", "step.py")
  impure = [name for name in _imports(path)
            if name == "logging" or name.endswith("multihost_utils")]
  assert not impure, impure


# How a field's line starts: `name=` in config.py's sections, `name: type =` in ModelConfig.
_FIELD = {"model": r"\s+(\w+): \w+ = "} | dict.fromkeys(
    ("data", "optim", "mesh", "train", "checkpoint"), r"\s+(\w+)=")


def _defaults_source(section):
  """The source that defines `section`'s fields: config.model is ModelConfig's fields."""
  if section == "model":
    source = inspect.getsource(model_config.ModelConfig)
    return source.split("  target_platform:")[0]  # start-up sets it, not a config field
  return inspect.getsource(getattr(config_lib, f"{section}_defaults"))


def test_every_config_field_has_a_one_line_comment():
  missing = []
  for section in ("model", "data", "optim", "mesh", "train", "checkpoint"):
    source = _defaults_source(section)
    fields = [(match.group(1), line) for line in source.splitlines()
              if (match := re.match(_FIELD[section], line))]
    assert {name for name, _ in fields} == set(getattr(config_lib, f"{section}_defaults")())
    missing += [f"{section}.{name}" for name, line in fields if "  # " not in line]
    # A comment that runs on under its field (indented past the field names) is not one line.
    missing += [f"{section}: {line.strip()}" for line in source.splitlines()
                if re.match(r"\s{8,}#", line)]
  seed_line = inspect.getsource(config_lib.default_config).split("config.seed =")[1].splitlines()[0]
  missing += [] if "  # " in seed_line else ["seed"]
  assert not missing, missing


def test_the_comment_of_every_choice_field_lists_all_its_choices():
  unlisted = []
  for field, choices in config_lib.CHOICES.items():
    section, name = field.split(".")
    line = next(line for line in _defaults_source(section).splitlines()
                if (match := re.match(_FIELD[section], line)) and match.group(1) == name)
    comment = line.split("  # ", 1)[1]
    unlisted += [f"{field}: {choice}" for choice in choices
                 if choice and not re.search(rf"(?<!\w){re.escape(choice)}(?!\w)", comment)]
  assert not unlisted, unlisted
