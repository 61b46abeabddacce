"""`data.prepare` goes on from the shards of an interrupted run only while the plan they were
written to still holds: the same source, files (sizes and modification times), field and
tokenizer; otherwise it refuses in one line, naming what changed and how to go on."""
import json
import os
import re
import subprocess

import pytest

from glmjax.data import prepare
from test_prepare import data_config


def test_a_resume_after_a_corpus_file_changed_is_refused(tmp_path):
  # Whole-file .txt documents are never cut, so a changed file leaves the pieces as they were:
  # only its recorded size shows that the finished shard holds its old text.
  for name in ("a", "b"):
    (tmp_path / f"{name}.txt").write_text(f"document {name}: " + "words " * 40)
  config = data_config(source="files", files=(f"{tmp_path}/*.txt",), txt_documents="file")
  out = str(tmp_path / "out")
  assert prepare.prepare(config, out, shard_mb=1e-4, limit_shards=1, progress=False) is None
  (tmp_path / "a.txt").write_text("document a, rewritten: " + "other words " * 40)
  with pytest.raises(ValueError, match=r"another source or tokenizer.*'source'\]"):
    prepare.prepare(config, out, shard_mb=1e-4, progress=False)


def test_a_resume_after_a_corpus_file_was_edited_in_place_to_the_same_size_is_refused(tmp_path):
  # Same size, so the recorded sizes agree; a newline moved, so the pieces planned now cut
  # another document than the finished shard holds. Only the file's modification time shows it.
  text = "first document\n\nsecond one here\n\n" * 20  # paragraphs: 40 documents
  (tmp_path / "a.txt").write_text(text)
  config = data_config(source="files", files=(f"{tmp_path}/a.txt",))
  out = str(tmp_path / "out")
  assert prepare.prepare(config, out, shard_mb=1e-4, limit_shards=1, progress=False) is None
  edited = text.replace("first document\n\n", "first\n\ndocument ", 1)
  assert len(edited) == len(text)
  (tmp_path / "a.txt").write_text(edited)
  stat = os.stat(tmp_path / "a.txt")  # a coarse clock may give the edit the same time: not so
  os.utime(tmp_path / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  with pytest.raises(ValueError, match=rf"was begun on corpus files written since: "
                                       rf"{tmp_path}/a.txt \(the shards written hold"):
    prepare.prepare(config, out, shard_mb=1e-4, progress=False)


def test_a_corpus_file_written_again_with_the_same_text_resumes_once_its_time_is_given_back(
    tmp_path):
  """A copy or a checkout rewrites a file with its old text: the refusal names the file and the
  command that gives it its recorded time back, after which the prepare goes on."""
  text = "first document\n\nsecond one here\n\n" * 20
  for name in ("a", "b"):
    (tmp_path / f"{name}.txt").write_text(text)
  config = data_config(source="files", files=(f"{tmp_path}/*.txt",))
  out = str(tmp_path / "out")
  assert prepare.prepare(config, out, shard_mb=1e-4, limit_shards=1, progress=False) is None
  stat = os.stat(tmp_path / "b.txt")
  os.utime(tmp_path / "b.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  with pytest.raises(ValueError, match=rf"written since: {tmp_path}/b.txt \(") as refused:
    prepare.prepare(config, out, shard_mb=1e-4, progress=False)
  touch = re.search(r"\((touch -d \S+ \S+)\)", str(refused.value)).group(1)
  subprocess.run(touch.split(), check=True)
  assert prepare.prepare(config, out, shard_mb=1e-4, progress=False)["num_docs"] == 80


def test_a_prepare_begun_before_modification_times_were_recorded_resumes(tmp_path):
  (tmp_path / "a.txt").write_text("first document\n\nsecond one here\n\n" * 20)
  config = data_config(source="files", files=(f"{tmp_path}/a.txt",))
  out = tmp_path / "out"
  assert prepare.prepare(config, str(out), shard_mb=1e-4, limit_shards=1, progress=False) is None
  plan = json.loads((out / "plan.json").read_text())
  del plan["modified"]
  (out / "plan.json").write_text(json.dumps(plan))
  assert prepare.prepare(config, str(out), shard_mb=1e-4, progress=False)["num_docs"] == 40


def test_a_resume_that_reads_another_json_field_is_refused(tmp_path):
  # The pieces are byte ranges, the same for every field: only the recorded field shows that
  # the finished shards hold `text` and the rest would hold `body`.
  lines = [json.dumps({"text": f"text {i} " * 20, "body": f"body {i} " * 20}) for i in range(40)]
  (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
  config = data_config(source="files", files=(f"{tmp_path}/a.jsonl",))
  out = str(tmp_path / "out")
  assert prepare.prepare(config, out, shard_mb=1e-3, limit_shards=1, progress=False) is None
  config.text_field = "body"
  with pytest.raises(ValueError, match=r"another source or tokenizer.*\['source'\]"):
    prepare.prepare(config, out, shard_mb=1e-3, progress=False)


def test_a_resume_that_cuts_txt_files_another_way_is_refused(tmp_path):
  # Files smaller than --shard_mb are planned whole either way: only the recorded reading
  # shows that the finished shard holds paragraphs and the rest would hold whole files.
  for name in ("a", "b", "c"):
    (tmp_path / f"{name}.txt").write_text(f"{name} one " * 50 + "\n\n" + f"{name} two " * 50)
  config = data_config(source="files", files=(f"{tmp_path}/*.txt",), txt_documents="paragraphs")
  out = str(tmp_path / "out")
  assert prepare.prepare(config, out, shard_mb=7e-4, limit_shards=1, progress=False) is None
  config.txt_documents = "file"
  with pytest.raises(ValueError, match=r"another source or tokenizer.*\['source'\]"):
    prepare.prepare(config, out, shard_mb=7e-4, progress=False)
