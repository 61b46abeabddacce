"""The workdir's config history: config.json is the newest start's, earlier ones are kept."""
import os
import re
import subprocess
import sys

import pytest

from glmjax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configs(workdir):
  return {name: (workdir / name).read_text() for name in sorted(os.listdir(workdir))}


def test_a_resume_with_the_same_config_keeps_no_copy_of_it(tmp_path):
  workdir_lib.write_config(str(tmp_path), '{"seed": 0}', 0)
  workdir_lib.write_config(str(tmp_path), '{"seed": 0}', 4)
  assert _configs(tmp_path) == {"config.json": '{"seed": 0}'}


def test_a_changed_config_keeps_the_earlier_one_named_by_the_step_it_ran_until(tmp_path):
  workdir_lib.write_config(str(tmp_path), '{"seed": 0}', 0)
  workdir_lib.write_config(str(tmp_path), '{"seed": 1}', 4)
  assert _configs(tmp_path) == {"config.json": '{"seed": 1}',
                                "config.until-step-4.json": '{"seed": 0}'}


def test_every_replaced_config_is_kept_when_two_resumes_start_at_the_same_step(tmp_path):
  """A resume with a changed config that stops before its first save, then another: both
  start at step 4, and neither earlier config is lost."""
  for text, start in (('{"seed": 0}', 0), ('{"seed": 1}', 4), ('{"seed": 2}', 4)):
    workdir_lib.write_config(str(tmp_path), text, start)
  configs = _configs(tmp_path)
  assert configs.pop("config.json") == '{"seed": 2}'
  assert configs["config.until-step-4.json"] == '{"seed": 0}'
  assert sorted(configs.values()) == ['{"seed": 0}', '{"seed": 1}']


def test_an_unwritable_workdir_line_names_the_file_that_could_not_be_written():
  # The workdir may be writable while a file in it is not (a config.json of another user).
  error = PermissionError(13, "Permission denied", "/runs/a/config.json")
  line = workdir_lib.unwritable("/runs/a", error)
  assert line.startswith("--workdir=/runs/a cannot be written: Permission denied "
                         "(/runs/a/config.json); ")


def test_a_second_train_in_a_held_workdir_is_refused_naming_the_one_that_holds_it(tmp_path):
  held = workdir_lib.lock(str(tmp_path), 0)
  try:
    with pytest.raises(workdir_lib.WorkdirInUseError,
                       match=f"^--workdir={tmp_path} is in use by another train "
                             rf"\(pid {os.getpid()} on .*, since 20.*\): wait for it to end"):
      workdir_lib.lock(str(tmp_path), 0)
  finally:
    held.close()
  workdir_lib.lock(str(tmp_path), 0).close()  # free once the holder closed it


def test_the_lock_of_a_run_killed_with_sigkill_does_not_block_its_resume(tmp_path):
  """The lock is the kernel's: it ends with the process, the file it leaves means nothing."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from glmjax import workdir; "
       "h = workdir.lock(sys.argv[1], 0); print('held', flush=True); time.sleep(120)",
       str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lib.WorkdirInUseError, match=f"pid {holder.pid} on "):
      workdir_lib.lock(str(tmp_path), 0)
  finally:
    holder.kill()
    holder.wait(timeout=60)
  assert (tmp_path / workdir_lib.LOCK_FILE).exists()
  workdir_lib.lock(str(tmp_path), 0).close()


def test_only_process_0_locks_and_a_bucket_is_not_locked(tmp_path):
  assert workdir_lib.lock(str(tmp_path), 1) is None
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()
  assert workdir_lib.lock("gs://bucket/run", 0) is None


def test_a_local_folder_with_a_colon_or_a_double_slash_is_locked_and_a_url_of_any_scheme_is_not(
    tmp_path):
  """Remote means a URL (scheme://), not a path that holds ':' or '//' somewhere."""
  folder = tmp_path / "run:1"
  folder.mkdir()
  for path in (str(folder), f"{tmp_path}//run:1"):
    handle = workdir_lib.lock(path, 0)
    assert handle is not None, path
    handle.close()
  assert (folder / workdir_lib.LOCK_FILE).exists()
  for url in ("gs://bucket/run", "s3://bucket/run"):
    assert workdir_lib.lock(url, 0) is None, url


def _corpus_run(tmp_path, steps: int, allow: bool = False):
  """The :local model, small, on tmp_path/corpus.txt: two steps and one checkpoint per run."""
  import importlib  # pylint: disable=import-outside-toplevel
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, max_position=64)
  config.data.update(seq_len=64, source="files", files=(str(tmp_path / "corpus.txt"),))
  config.train.update(steps=steps, eval_every=0, log_every=1, allow_config_change=allow)
  config.checkpoint.every = 2
  return config


def test_a_resume_on_a_corpus_file_edited_in_place_is_refused_unless_allowed(tmp_path):
  """Same data.files, other text: rows are drawn by document index, so the resumed run would
  train on other rows and hold out other documents (some it trained on) without a word."""
  from glmjax import train  # pylint: disable=import-outside-toplevel
  paragraphs = [f"paragraph {i}: " + "some words of text " * 8 for i in range(60)]
  (tmp_path / "corpus.txt").write_text("\n\n".join(paragraphs) + "\n")
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_corpus_run(tmp_path, steps=2), workdir)
  (tmp_path / "corpus.txt").write_text("\n\n".join(paragraphs[:40]) + "\n")
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"now holds 40 documents, .*; the checkpoint at step 2 in .* was "
                           r"trained on 60 documents, .*allow_config_change=true") as refused:
    train.train_and_evaluate(_corpus_run(tmp_path, steps=4), workdir)
  # Both token counts are named, each its own corpus's: a third of the text went.
  now, then = (int(count.replace(",", "")) for count in re.findall(
      r"(?:now holds|trained on) \d+ documents, ([\d,]+) tokens", str(refused.value)))
  assert 0 < now < then
  result = train.train_and_evaluate(_corpus_run(tmp_path, steps=4, allow=True), workdir)
  assert result["step"] == 4
  # The checkpoint of step 4 records the new text: the next resume needs no flag.
  assert train.train_and_evaluate(_corpus_run(tmp_path, steps=6), workdir)["step"] == 6


def test_a_checkpoint_from_before_the_corpus_record_resumes_unchecked():
  workdir_lib.check_corpus(None, {"documents": 1, "tokens": 9}, step=2, workdir="w",
                           label="builtin", allow=False)


def test_the_lock_file_names_only_its_current_holder_not_an_earlier_run(tmp_path):
  (tmp_path / workdir_lib.LOCK_FILE).write_text("pid 1 on an-old-host, since 2020-01-01 00:00:00\n")
  held = workdir_lib.lock(str(tmp_path), 0)
  try:
    lines = (tmp_path / workdir_lib.LOCK_FILE).read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pid {os.getpid()} on ")
  finally:
    held.close()
