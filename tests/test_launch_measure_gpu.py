"""launch/measure_gpu.sh keeps every run's figures; stand-ins for the bench and nvidia-smi.

(tests/test_bench.py runs the script for real on a CPU with a tiny model.)"""
import json
import os
import re
import subprocess

from launch_stubs import make_stub, never_the_real_gcloud_or_srun  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_running_the_parts_one_at_a_time_keeps_every_parts_figures(tmp_path):
  make_stub(str(tmp_path / "bin" / "python3"),  # stands in for python3 -m glmjax.bench
            'for a in "$@"; do case "$a" in --what=*) what=${a#--what=};; esac; done; '
            'echo "compiling"; echo "{\\"what\\": \\"$what\\", \\"tokens_per_s\\": 1}"')
  make_stub(str(tmp_path / "bin" / "nvidia-smi"), "echo NVIDIA H200, 143771 MiB, 570.00")
  env = {**os.environ, "OUT": str(tmp_path / "out"),
         "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}

  def measure(part: str) -> str:
    result = subprocess.run(["bash", "launch/measure_gpu.sh", part], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout

  measure("attention")
  printed = measure("sweep")
  figures = [json.loads(line)
             for line in (tmp_path / "out" / "measure_gpu.jsonl").read_text().splitlines()]
  assert [(f["what"], f["tokens_per_s"]) for f in figures] == [("attention", 1), ("sweep", 1)]
  runs = [f["run"] for f in figures]  # each run's start time (UTC) and process id
  assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ pid \d+", r) for r in runs)
  assert runs[0] != runs[1]
  assert '"what": "sweep"' in printed and '"what": "attention"' not in printed  # this run's
  log = (tmp_path / "out" / "measure_gpu.log").read_text()
  assert ": measure_gpu.sh attention\n" in log and ": measure_gpu.sh sweep\n" in log
  assert log.count(" bench --what=") == 2


def test_a_profiled_part_named_twice_copies_up_its_later_calls_trace(tmp_path):
  # As jax.profiler does, each call writes its trace into a new folder under --profile_dir.
  make_stub(str(tmp_path / "bin" / "python3"),
            f'n=$(( $(cat {tmp_path}/calls 2>/dev/null || echo 0) + 1 )); echo $n > {tmp_path}/calls; '
            'for a in "$@"; do case "$a" in --profile_dir=*) dir=${a#--profile_dir=};; esac; done; '
            'mkdir -p "$dir/plugins/profile/trace$n"; '
            'echo "call $n" > "$dir/plugins/profile/trace$n/perfetto_trace.json.gz"; '
            'echo "program $n" > "$dir/compiled_hlo.txt.gz"; echo "{\\"what\\": \\"profile\\"}"')
  make_stub(str(tmp_path / "bin" / "nvidia-smi"), "echo NVIDIA H200, 143771 MiB, 570.00")
  env = {**os.environ, "OUT": str(tmp_path / "out"),
         "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
  result = subprocess.run(["bash", "launch/measure_gpu.sh", "profile", "profile"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "out" / "profile_trace.json.gz").read_text() == "call 2\n"
  assert (tmp_path / "out" / "profile_hlo.txt.gz").read_text() == "program 2\n"


def test_the_flags_part_never_hands_xla_a_blank_xla_flags(tmp_path):
  # XLA takes an XLA_FLAGS that is not a flag for a file name: " " aborted the baseline trial.
  make_stub(str(tmp_path / "bin" / "python3"),
            f'printf "%s|" "${{XLA_FLAGS-unset}}" >> {tmp_path}/seen; echo "{{\\"what\\": 1}}"')
  make_stub(str(tmp_path / "bin" / "nvidia-smi"), "echo NVIDIA H200, 143771 MiB, 570.00")
  base = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
  for given, first in ((None, "unset"), ("--xla_dump_to=/tmp/d", "--xla_dump_to=/tmp/d")):
    env = {**base, "OUT": str(tmp_path / "out"),
           "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           **({"XLA_FLAGS": given} if given else {})}
    (tmp_path / "seen").write_text("")
    result = subprocess.run(["bash", "launch/measure_gpu.sh", "flags"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    seen = (tmp_path / "seen").read_text().split("|")[:-1]
    assert len(seen) == 5 and seen[0] == first
    added = "--xla_gpu_enable_dynamic_slice_fusion=true"
    assert seen[1] == (f"{given} {added}" if given else added)
    assert all(value == value.strip() and value for value in seen)
