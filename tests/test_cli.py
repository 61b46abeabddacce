"""Every command that takes --config reports a mistyped config argument or field, a config file
that is not there, or a config value that cannot work, in one line with exit status 1 (2 for
aot, whose 1 means "does not fit") and no traceback (glmjax/cli.py)."""
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each command with the flags it needs besides --config ({tmp}: the test's folder).
COMMANDS = {
    "train": ["glmjax.train", "--workdir={tmp}/run"],
    "aot": ["glmjax.aot", "--topology=v5p-8"],
    "bench": ["glmjax.bench", "--what=data"],
    "prepare": ["glmjax.data.prepare", "--out={tmp}/prepared"],
}
MISTAKES = {
    "config argument": (["--config=configs/base.py:lcoal"],
                        "--config=configs/base.py:lcoal: .*config argument 'lcoal' is not one "
                        "of this config's: local"),
    "missing file": (["--config=configs/nope.py"],
                     r"--config: cannot load the config file \(.*configs/nope.py"),
    "mistyped field": (["--config=configs/base.py:local", "--config.data.batch_sise=3"],
                       "--config.data.batch_sise: the config has no field 'batch_sise'. "
                       "Did you mean \"batch_size\""),
}


def command(name, tmp_path, *args, env=None):
  """Runs `python -m` the command in the repository; returns the finished process."""
  module, *needed = COMMANDS[name]
  return subprocess.run(
      [sys.executable, "-m", module, *(a.format(tmp=tmp_path) for a in needed), *args],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **(env or {})})


# aot's 1 means "does not fit"; a mistake in its command is 2.
STATUS = {"aot": 2}


def assert_one_line(result, pattern, status=1):
  assert result.returncode == status, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and result.stdout == "", result.stderr[-2000:]
  assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_config_that_does_not_parse_is_one_line_with_the_command_s_mistake_status(name, mistake,
                                                                                   tmp_path):
  args, pattern = MISTAKES[mistake]
  assert_one_line(command(name, tmp_path, *args), pattern, STATUS.get(name, 1))
  assert os.listdir(tmp_path) == []  # refused before the command wrote anything


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_config_value_that_cannot_work_is_one_line_with_the_command_s_mistake_status(name,
                                                                                     tmp_path):
  # Every command, not only those that validate through cli.run: train checks its own config.
  result = command(name, tmp_path, "--config=configs/base.py:local",
                   "--config.model.num_heads=5")
  assert_one_line(result, r"model.num_heads=5.*integer head dim", STATUS.get(name, 1))
  assert os.listdir(tmp_path) == []  # train's workdir is not made for a config it refuses


def test_bench_reports_a_missing_tokenizer_file_in_one_line_and_keeps_its_traceback(tmp_path):
  temp = tmp_path / "temp"
  temp.mkdir()
  result = command("bench", tmp_path, "--what=prepare", "--config=configs/base.py:local",
                   "--config.data.tokenizer=sentencepiece",
                   f"--config.data.tokenizer_path={tmp_path}/missing.model",
                   env={"TMPDIR": str(temp)})
  assert_one_line(result, r"data.tokenizer_path=.*missing.model")
  # ValueError and OSError are what a bug raises too: the line names a file with the traceback.
  kept = re.search(r"\(traceback in (\S+)\)$", result.stderr.strip())
  assert kept and os.path.dirname(kept.group(1)) == str(temp), result.stderr
  assert "Traceback (most recent call last)" in open(kept.group(1), encoding="utf-8").read()


@pytest.mark.parametrize("form", ["--config=FILE", "--config FILE", "--config=FILE:local"],
                         ids=["joined", "apart", "with its argument"])
def test_a_key_error_in_the_config_file_s_own_code_keeps_its_traceback(tmp_path, form):
  """Not blamed on an override that carries the same key: the file's traceback is the help."""
  config_file = tmp_path / "broken.py"
  config_file.write_text(
      "from configs import base\n\n"
      "def get_config(arg=None):\n"
      "  config = base.get_config('local')\n"
      "  config.data.batch_size = {}['batch_size']  # the config file's own bug\n"
      "  return config\n")
  given = form.replace("FILE", str(config_file)).split(" ")  # absl takes both forms
  result = command("bench", tmp_path, *given, "--config.data.batch_size=3")
  assert result.returncode != 0
  assert "has no field" not in result.stderr, result.stderr[-2000:]
  assert f'File "{config_file}", line 5' in result.stderr
  assert result.stderr.strip().endswith("KeyError: 'batch_size'")


@pytest.mark.parametrize("override, pattern", [
    ("--noconfig.data.sentence_windws", "--config.data.sentence_windws: the config has no field "
     "'sentence_windws'. Did you mean \"sentence_windows\""),
    ("--config.data.batch_size.x=3", r"--config.data.batch_size.x: Attribute .*int.*\.x does not "
     "exist"),
], ids=["boolean", "below_a_value"])
def test_an_override_of_a_boolean_or_below_a_value_that_names_no_field_is_one_line(
    override, pattern, tmp_path):
  assert_one_line(command("bench", tmp_path, "--config=configs/base.py:local", override),
                  pattern)


def test_aot_gives_status_2_to_every_mistake_in_its_command(tmp_path):
  """1 is kept for "does not fit": a value that cannot work is a mistake, like a bad flag."""
  result = command("aot", tmp_path, "--config=configs/base.py:local",
                   "--config.optim.learning_rate=nan", "--topology=v5p-8")
  assert result.returncode == 2 and "optim.learning_rate=nan" in result.stderr
  assert command("aot", tmp_path, "--config=configs/base.py:local",
                 "--topolgy=v5p-8").returncode == 2
  # An objective recipe train would refuse (probabilities summing to 0.5) is refused here too.
  recipe = command("aot", tmp_path, "--config=configs/base.py:local",
                   "--config.data.blank_prob=0.5", "--topology=v5p-8")
  assert recipe.returncode == 2 and "must be >= 0 and sum to 1" in recipe.stderr
  # A mesh that cannot split the parameters (12 heads over tensor=8) is refused before compiling.
  split = command("aot", tmp_path, "--config=configs/base.py", "--topology=v5p-32",
                  "--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=8")
  assert split.returncode == 2 and "model.num_heads = 12 cannot be split" in split.stderr
  assert "Traceback" not in split.stderr


@pytest.mark.parametrize("module", ["glmjax.evaluate", "glmjax.generate", "glmjax.convert",
                                    "glmjax.train"])
def test_a_mistyped_flag_is_one_line_naming_it_in_every_command(module, tmp_path):
  """Also the commands without --config: absl's own report is two lines ("FATAL ...")."""
  args = ["import"] if module == "glmjax.convert" else []
  result = subprocess.run([sys.executable, "-m", module, *args, "--wrkdir=x"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert_one_line(result, r"Unknown command line flag 'wrkdir'")


@pytest.mark.parametrize("module, flag", [
    ("glmjax.train", "--help"), ("glmjax.aot", "--helpshort"), ("glmjax.evaluate", "-?"),
    ("glmjax.generate", "--helpfull")])
def test_asking_a_command_for_its_help_prints_its_flags_with_status_0(module, flag):
  """absl ends its help flags with status 1, as if the command had failed; a script that runs
  `--help` first would stop there."""
  result = subprocess.run([sys.executable, "-m", module, flag], cwd=REPO, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"python -m {module}" in result.stdout and "\nflags:\n" in result.stdout, result.stdout


@pytest.mark.parametrize("module, flag, status", [
    ("glmjax.generate", "--text=Paris", 1), ("glmjax.train", "--config=configs/base.py:local", 1),
    ("glmjax.aot", "--config=configs/base.py:local", 2)])
def test_an_unquoted_value_is_one_line_saying_to_quote_it_not_the_whole_help(module, flag, status,
                                                                            tmp_path):
  """--text=Paris is the [MASK] of France. (no quotes): the shell passes `is the ...` as
  arguments the command refuses; absl's own report prints every flag's help above it."""
  where = "--topology=v5p-8" if module == "glmjax.aot" else f"--workdir={tmp_path}/run"
  result = subprocess.run([sys.executable, "-m", module, where, flag, "is", "the", "[MASK]"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert_one_line(result, r"Unexpected arguments: is the \[MASK\] \(a value holding spaces "
                          r"needs quotes: .*\); --helpshort lists the flags", status)


def test_a_refused_command_line_ending_in_a_full_stop_reads_without_a_stray_one(monkeypatch,
                                                                                capsys):
  """`Both --config and --topology are required.; --helpshort lists the flags` read oddly."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from glmjax import cli  # pylint: disable=import-outside-toplevel

  def refused(argv):
    raise app.UsageError("--workdir is required.")
  monkeypatch.setattr(sys, "argv", ["evaluate"])
  ours = logging.getLogger("glmjax")  # logs.fail gives it a console on this test's stderr
  monkeypatch.setattr(ours, "handlers", [])
  monkeypatch.setattr(ours, "propagate", ours.propagate)
  monkeypatch.setattr(ours, "level", ours.level)
  with pytest.raises(SystemExit):
    cli.run(refused)
  assert capsys.readouterr().err.strip().endswith(
      "--workdir is required; --helpshort lists the flags")


def test_ctrl_c_ends_a_command_in_one_line_with_the_shell_s_status_for_sigint(monkeypatch,
                                                                              capsys):
  from glmjax import cli, logs  # pylint: disable=import-outside-toplevel

  def interrupted(argv):
    raise KeyboardInterrupt

  def exit_at_once(status):  # the command's os._exit would end pytest too
    raise SystemExit(status)
  monkeypatch.setattr(logs, "exit_at_once", exit_at_once)
  monkeypatch.setattr(sys, "argv", ["prepare"])
  # logs.fail gives glmjax's logger a console on this test's stderr: put the logger back after.
  ours = logging.getLogger("glmjax")
  monkeypatch.setattr(ours, "handlers", [])
  monkeypatch.setattr(ours, "propagate", ours.propagate)
  monkeypatch.setattr(ours, "level", ours.level)
  # BaseException: without the handling, the KeyboardInterrupt itself fails this test (rather
  # than reaching pytest, which would take it for the user's and stop the session).
  with pytest.raises(BaseException) as stopped:
    cli.run(interrupted)
  assert isinstance(stopped.value, SystemExit), repr(stopped.value)
  assert stopped.value.code == 130  # 128 + SIGINT, as a shell gives a process Ctrl-C ended
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and "Interrupted by Ctrl-C" in lines[0], lines


# A command whose main compiles for seconds (unfused kernels: XLA's compile is slow, tracing
# fast), saying "compiling" on stdout just before the compile starts.
_COMPILING = """
import jax
import jax.numpy as jnp
from glmjax import cli

def main(argv):
  def slow_to_compile(x):
    for i in range(300):
      x = jnp.sort(jnp.cumsum(jnp.tanh(x @ x.T), axis=i % 2)[:, ::-1] + i, axis=0)
    return x
  lowered = jax.jit(slow_to_compile).lower(jnp.ones((8, 8)))
  print("compiling", flush=True)
  lowered.compile()
  print("compiled", flush=True)

cli.run(main)
"""


def test_ctrl_c_during_a_compile_ends_the_command_with_status_130_not_a_crash():
  """Ctrl-C cuts Python's wait for the compile, which goes on on jaxlib's threads: the usual
  exit then freed jax's backend under it (jax's atexit clean-up) and crashed after the one line
  (SIGSEGV), most of the time. cli.run leaves without that clean-up (logs.exit_at_once)."""
  for _ in range(3):
    # Not from the tests' compilation cache: an entry there (one run whose compile ended before
    # the Ctrl-C) is read back in a fraction of a second, and this test fails from then on.
    process = subprocess.Popen([sys.executable, "-c", _COMPILING], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
                                    "JAX_ENABLE_COMPILATION_CACHE": "false"})
    try:
      assert process.stdout.readline() == "compiling\n"
      time.sleep(0.5)
      process.send_signal(signal.SIGINT)
      out, err = process.communicate(timeout=120)
    finally:
      process.kill()
    assert "compiled" not in out  # the Ctrl-C came during the compile, as meant
    lines = err.strip().splitlines()
    assert (process.returncode, len(lines)) == (130, 1), (process.returncode, err)
    assert "Interrupted by Ctrl-C" in lines[0], err


def test_a_command_ctrl_c_ended_waits_for_its_threads_that_are_not_daemons(tmp_path):
  """Orbax writes a save in such a thread: a save under way completes before the exit that
  skips the interpreter's own shutdown (which would have waited for it)."""
  written = tmp_path / "written"
  script = f"""
import threading, time
from glmjax import cli

def main(argv):
  def save():
    time.sleep(1)
    open({str(written)!r}, "w").close()
  threading.Thread(target=save).start()
  raise KeyboardInterrupt

cli.run(main)
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 130, result.stderr
  assert written.exists()


def test_a_command_ctrl_c_ended_with_idle_pools_and_workers_still_ends_in_one_line_at_once():
  """An idle thread pool (Orbax keeps one until its manager closes; a Ctrl-C in close() skips
  that) and a multiprocessing pool's workers: the interpreter's exit wakes and frees them, and
  so must the exit that skips it, or the command waits forever (or warns of leaked
  semaphores)."""
  script = """
import concurrent.futures, multiprocessing
from glmjax import cli

KEPT = []  # as Orbax's manager keeps its pool

def main(argv):
  KEPT.append(concurrent.futures.ThreadPoolExecutor(1))
  KEPT[0].submit(int).result()  # its thread now waits idle for more work
  workers = multiprocessing.get_context("spawn").Pool(1)
  workers.map(abs, [1])
  workers.terminate()
  raise KeyboardInterrupt

cli.run(main)
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 130, result.stderr
  assert result.stderr.strip().splitlines()[-1].endswith("Interrupted by Ctrl-C"), result.stderr
  assert "leaked" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("module, flag, suggested", [
    ("glmjax.generate", "--txt=Paris is", "text"),  # absl suggests none: too short a prefix
    ("glmjax.train", "--dir=run", "workdir"),  # not absl's own log_dir
    ("glmjax.train", "--steps=10", "config.train.steps"),  # a config field given bare
    ("glmjax.data.prepare", "--seed=1", "config.seed"),
    # The README names these two as well; absl suggests nothing for either.
    ("glmjax.evaluate", "--clze=x", "cloze"),
    ("glmjax.convert", "--ot=x", "out"),
    ("glmjax.train", "--workdri=run", "workdir"),  # absl's own suggestion, given once
])
def test_an_unknown_flag_close_to_one_the_command_has_is_one_line_suggesting_it(
    tmp_path, module, flag, suggested):
  result = subprocess.run(
      [sys.executable, "-m", module, *(["import"] if module == "glmjax.convert" else []), flag],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  name = flag[2:].split("=")[0]
  assert_one_line(result, rf"Unknown command line flag '{name}'\. Did you mean: "
                          rf"{re.escape(suggested)} \? \(--helpshort lists the flags\)$")


@pytest.mark.parametrize("name", ["train", "aot"])
def test_a_config_override_without_a_config_file_is_one_line_asking_for_the_file(name, tmp_path):
  # absl knew no such flag and said only that: the override was right, --config was missing.
  module, *needed = COMMANDS[name]
  result = subprocess.run(
      [sys.executable, "-m", module, *(a.format(tmp=tmp_path) for a in needed),
       "--config.model.remat=full"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert_one_line(result, r"Unknown command line flag 'config\.model\.remat'\. It overrides a "
                          r"field of the config file, and no --config=FILE was given: add one "
                          r"\(e\.g\. --config=configs/base\.py\) before --config\.model\.remat",
                  status=2 if name == "aot" else 1)


@pytest.mark.parametrize("name, pattern", [
    ("train", "Both --config and --workdir are required"),
    ("aot", "Both --config and --topology are required"),
    ("prepare", r"needs --config=CONFIG_FILE\[:ARG\] and --out=DIR")],
    ids=["train", "aot", "prepare"])
def test_a_command_run_without_its_config_file_is_one_line_asking_for_it(name, pattern,
                                                                          tmp_path):
  module, *needed = COMMANDS[name]
  result = subprocess.run([sys.executable, "-m", module, *(a.format(tmp=tmp_path) for a in needed)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert_one_line(result, pattern + "; --helpshort lists the flags$", status=STATUS.get(name, 1))


def test_a_negative_bench_steps_is_one_line_before_the_step_compiles(tmp_path):
  # Otherwise the step compiled and the prefetcher answered with its own words, naming no flag.
  result = command("bench", tmp_path, "--config=configs/base.py:local", "--what=step",
                   "--steps=-1")
  assert_one_line(result, r"--steps=-1: give the steps to time \(0: the benchmark's default\) "
                          r"\(traceback in ")
  assert "Compiled" not in result.stderr
