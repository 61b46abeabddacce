"""Where the step's device time goes: `python -m glmjax.bench --what=profile --config=...`.

Compiles the config's train step as `--what=step` does (one pre-built synthetic batch), runs
one warm-up step, then traces `--steps` steps (default 3) with jax.profiler into
`--profile_dir` (default: a new temporary folder, kept), which TensorBoard's profile plugin or
Perfetto (`perfetto_trace.json.gz`) opens. It prints one JSON line: the step time while traced,
and for each line of device activity in the trace (a GPU stream, a device's XLA ops or modules)
its busy time per step, that time by class of operation (matmul, attention, elementwise
fusions, writes into and fills of the layer loop's stacks, ...) and its costliest operations.
Classes come from names: kernel names on a stream say what they are; on an XLA ops line a
library call is `custom-call.N` (cuBLAS, tokamax), counted as `other`. Keep `--steps` small:
the trace viewer keeps at most a million events. A CPU has no device lines in the trace:
`device_lines` is empty and `note` says so.
The program as XLA optimized it is written beside the trace (`compiled_hlo.txt.gz`), and the
line counts its library and kernel calls by target (`compiled_custom_calls`; a layer loop's
body is written once), which says whether a kernel seen twice per layer in the trace is called
twice in the program.
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
from absl import flags

from glmjax.bench import step as step_bench

DEFAULT_STEPS = 3
TOP = 15  # operations listed per device line
# Classes of operation, by kernel or op name (lower case), first match wins: attention before
# matmul, as fused attention kernels' names may mention gemm.
CLASSES = (
    ("attention", re.compile(r"mosaic|tokamax|flash|fmha|sdpa|splash|attention|cudnn")),
    ("matmul", re.compile(r"gemm|nvjet|cublas|cutlass|xmma|gmma|\bdot|convolution|matmul")),
    ("transfer", re.compile(r"memcpy|memset|d2h|h2d|copy|transpose")),
    ("rng", re.compile(r"rng|threefry|philox|random")),
    ("reduce", re.compile(r"reduce|all-gather|all-reduce|collective")),
    # A layer loop writes each layer's saved activations into stacks (dynamic-update-slice
    # fusions) that it first fills (broadcast fusions): 6-9% of an H200 step in 2026-12. By
    # name only: `stack_write` also counts writes into gradient stacks, and `fill` any fusion
    # XLA named after a broadcast (the gradient buffers' fills too).
    ("stack_write", re.compile(r"dynamic_update_slice")),
    ("fill", re.compile(r"broadcast_fusion")),
    ("fusion", re.compile(r"fusion|loop_|elementwise")),
)
LINES = 8  # device lines reported, the busiest first


def main(config, argv):
  del argv
  steps = flags.FLAGS.steps or DEFAULT_STEPS
  if steps < 0:
    raise ValueError(f"--steps={steps}: give the number of steps to trace (default "
                     f"{DEFAULT_STEPS})")
  print(json.dumps(measure(config, steps,
                           flags.FLAGS.profile_dir or tempfile.mkdtemp(prefix="glmjax-profile-"))))


def measure(config, steps: int, folder: str) -> dict:
  with step_bench.compiled_step(config) as (compiled, state, batch, _, model_config, *_):
    # The optimized program first: it is what explains a step that then fails or runs oddly.
    hlo = compiled.as_text()
    hlo_file = os.path.join(folder, "compiled_hlo.txt.gz")
    os.makedirs(folder, exist_ok=True)
    with gzip.open(hlo_file, "wt") as stream:
      stream.write(hlo)
    state, out = compiled(state, batch)  # warm-up: compiled, buffers allocated
    jax.block_until_ready(out)
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        state, out = compiled(state, batch)
      jax.block_until_ready(out)
      step_time = (time.perf_counter() - start) / steps
  traces = sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True),
                  key=os.path.getmtime)
  if not traces:
    raise OSError(f"--profile_dir={folder}: jax.profiler wrote no perfetto_trace.json.gz "
                  "there; check that the folder is writable and has space")
  with gzip.open(traces[-1], "rt") as stream:
    trace = json.load(stream)
  lines = device_lines(trace, steps)
  result = {"what": "profile", "device_kind": jax.devices()[0].device_kind,
            "attention": model_config.attention, "remat": config.model.remat,
            "batch_size": config.data.batch_size, "seq_len": config.data.seq_len,
            "steps": steps, "step_time_s": step_time, "trace_file": traces[-1],
            "device_lines": lines, "compiled_hlo_file": hlo_file,
            "compiled_custom_calls": custom_call_counts(hlo)}
  if not lines:
    result["note"] = ("the trace has no device lines here (a CPU runs XLA on host threads)"
                      if jax.default_backend() == "cpu" else
                      "the trace has no device lines: the device tracer (CUPTI on a GPU) did "
                      "not record; open the trace to see what it holds")
  return result


def device_lines(trace: dict, steps: int) -> list[dict]:
  """Per device line of a Chrome/Perfetto trace (`traceEvents`): busy seconds per step, by class
  and for the costliest operations; the busiest lines first. Each line is summed on its own: a
  device's lines may show the same work at several levels (kernels on a stream, the XLA ops,
  the whole module), so lines are never added together."""
  events = trace.get("traceEvents", [])
  processes, threads = {}, {}
  for event in events:
    if event.get("ph") == "M" and event.get("name") == "process_name":
      processes[event["pid"]] = event.get("args", {}).get("name", "")
    elif event.get("ph") == "M" and event.get("name") == "thread_name":
      threads[event["pid"], event.get("tid")] = event.get("args", {}).get("name", "")
  durations = collections.defaultdict(lambda: collections.defaultdict(list))
  for event in events:
    process = processes.get(event.get("pid"), "")
    thread = threads.get((event.get("pid"), event.get("tid")), str(event.get("tid")))
    if event.get("ph") != "X" or not process.startswith("/device:") or "CUSTOM" in process:
      continue
    durations[f"{process} {thread}"][event["name"]].append(float(event.get("dur", 0)) * 1e-6)
  lines = []
  for line, ops in durations.items():
    per_op = {name: sum(times) / steps for name, times in ops.items()}
    classes = collections.Counter()
    for name, seconds in per_op.items():
      classes[op_class(name)] += seconds
    busy = sum(per_op.values())
    top = sorted(per_op, key=per_op.get, reverse=True)[:TOP]
    lines.append({
        "line": line, "busy_s_per_step": busy,
        "classes": {name: seconds for name, seconds in classes.most_common()},
        "top": [{"name": name[:120], "class": op_class(name), "s_per_step": per_op[name],
                 "calls_per_step": len(ops[name]) / steps} for name in top]})
  return sorted(lines, key=lambda line: line["busy_s_per_step"], reverse=True)[:LINES]


def op_class(name: str) -> str:
  lowered = name.lower()
  return next((label for label, pattern in CLASSES if pattern.search(lowered)), "other")


def custom_call_counts(hlo_text: str) -> dict:
  """{custom-call target: calls written in the HLO text}, the most written first."""
  targets = re.findall(r'custom_call_target="([^"]+)"', hlo_text)
  return dict(collections.Counter(targets).most_common())
