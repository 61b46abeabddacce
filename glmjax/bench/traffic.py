"""Memory traffic of a compiled program, read from its optimized HLO text:
`python -m glmjax.bench --what=traffic --config=... --traffic_topology=h200` compiles the
config's train step for those GPUs here, as `glmjax.aot` does (no GPU needed), and reads
it; `--traffic_hlo=FILE` reads an `*after_optimizations.txt` that XLA dumped instead, of any
program (XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text").

For each fusion that is not a matmul, the bytes it reads (its operands; one taken only through a
dynamic slice counts at the slice's size, the buffer a stack update writes into not at all) and
writes (its results; a stack update counts its update). Summed per computation that runs them:
the top level once, a loop body as many times as XLA knows the loop runs. Matmuls and custom
calls (attention kernels) are left out: they are bound by compute, or their traffic is their
own. A memory-bound pass costs about its bytes over the chip's copy bandwidth, so the totals say
where elementwise time goes, and how much a change saves, before a GPU is there to time it
(docs/performance.md compares them with profiles). `by_part` sums the same bytes by the pass
and module each fusion's op_name names (`part_of_step`). Made for GPU programs: TPU layouts
with tiles (`{1,0:T(8,128)}`) are not parsed, and 4-bit types count as nothing.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import re

import jax
from absl import flags

from glmjax import aot, gpu_topology

log = logging.getLogger(__name__)

_BYTES = {"c128": 16, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "f32": 4, "s32": 4, "u32": 4,
          "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f8e4m3fn": 1, "f8e5m2": 1, "s8": 1, "u8": 1,
          "pred": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY )?%(\S+) \(.*\) -> ")
_INSTRUCTION = re.compile(r"^\s+(ROOT )?%(\S+) = (.+?) ([a-z][\w\-]*)\((.*?)\)")
_FIRST_ARRAY = re.compile(r"\(?\s*(\w+\[[\d,]*\](?:\{[^}]*\})?)")  # a tuple's first element
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def array_bytes(text: str) -> int:
  """Bytes of every array type written in `text` (a shape, a tuple of shapes)."""
  return sum(_BYTES[dtype] * math.prod(int(n) for n in dims.split(",") if n)
             for dtype, dims in _ARRAY.findall(text))


def computations(hlo: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines."""
  found, current = {}, None
  for line in hlo.splitlines():
    header = _HEADER.match(line)
    if header:
      current = found.setdefault(header.group(1), [])
    elif line.startswith("}"):
      current = None
    elif current is not None:
      current.append(line)
  return found


def fusion_bytes(body: list[str]) -> tuple[int, int]:
  """(read, written) bytes of one fused computation, given its instruction lines."""
  shapes, ops, users, root = {}, {}, collections.defaultdict(list), None
  for line in body:
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, op, operands = match.group(2), match.group(3), match.group(4), match.group(5)
    shapes[name], ops[name] = shape, (op, re.findall(r"%([\w.\-]+)", operands))
    for position, operand in enumerate(ops[name][1]):
      users[operand].append((op, position, name))
    if match.group(1):
      root = name
  read = 0
  for name, (op, _) in ops.items():
    if op != "parameter":
      continue
    uses = users[name]
    if uses and all(use[:2] == ("dynamic-slice", 0) for use in uses):
      read += sum(array_bytes(shapes[use[2]]) for use in uses)
    elif not (uses and all(use[:2] == ("dynamic-update-slice", 0) for use in uses)):
      read += array_bytes(shapes[name])

  def written(name: str) -> int:
    op, operands = ops[name]
    if op == "tuple":
      return sum(written(operand) for operand in operands)
    if op == "dynamic-update-slice":
      return array_bytes(shapes[operands[1]])
    return array_bytes(shapes[name])

  return read, written(root) if root else 0


def _runs(found: dict[str, list[str]], entry: str) -> dict[str, int]:
  """Computation -> how many times one run of the program runs it: the top level once, a loop
  body its trip count times as often as the computation holding the loop (1 where XLA does not
  know the count), a called computation as often as its caller; so does the computation that an
  `async-start` runs (XLA's GPU pipeline moves some stack updates and slices into those, to run
  them on a stream of their own). Conditionals' branches are not followed."""
  runs, pending = {entry: 1}, [entry]
  while pending:
    caller = pending.pop()
    for line in found.get(caller, []):
      loop = re.search(r" while\(.*body=%([^,\s]+)", line)
      called = (re.search(r" call\(.*to_apply=%([^,\s]+)", line)
                or re.search(r" async-start\(.*calls=%([^,\s]+)", line))
      if loop:
        trips = _TRIPS.search(line)
        runs[loop.group(1)] = runs[caller] * (int(trips.group(1)) if trips else 1)
        pending.append(loop.group(1))
      elif called:
        runs[called.group(1)] = runs[caller]
        pending.append(called.group(1))
  return runs


def _is_matmul_or_kernel(body: list[str]) -> bool:
  """A fusion around a matmul or a library or kernel call: bound by compute, or its traffic is
  the callee's own."""
  return any(re.search(r" (dot|convolution|custom-call)\(", line) for line in body)


_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Path components jax writes for its own control flow and remat, not for a module of the model
# (nor are wrappers such as jvp(GLM), nor einsum specs such as bth,hd->btd)
_NOT_MODULES = frozenset(("while", "body", "cond", "eval_jaxpr", "checkpoint",
                          "rematted_computation", "closed_call"))
_MODULE = re.compile(r"[A-Za-z_]\w*")
_JVP = re.compile(r"jvp\((\w*)\)")  # jvp(GLM): the model's name; jvp(): a function's


def part_of_step(line: str) -> str:
  """Where an instruction's work comes from, read off the op_name jax gave it.

  First the pass: 'backward' under jax's transpose (what remat recomputes there included),
  'forward' under a jvp or inside a module (work XLA moved out of the loops), else 'update' (the
  optimizer step, the checks around it, the parameters' casts). Then the module path it ran in
  ('layers/mlp'; flax's numbered modules as one: 'layers_*/mlp'); where it ran in no module, the
  model it was differentiated in (the innermost jvp's name: 'GLM'; none for the loss's work)
  and its primitive in parentheses: 'forward GLM (dynamic_update_slice)' is a layer loop's
  stack writes, 'forward (log)' the loss's. 'unnamed' without an op_name."""
  found = _OP_NAME.search(line)
  if not found:
    return "unnamed"
  path = found.group(1).split("/")
  # flax numbers repeated modules (layers_0, layers_1 when unrolled; Dropout_0): one part each
  modules = [re.sub(r"_\d+$", "_*", name) for name in path[:-1]
             if _MODULE.fullmatch(name) and name not in _NOT_MODULES]
  differentiated = [name for wrapper in path for name in _JVP.findall(wrapper)]
  phase = ("backward" if any(name.startswith("transpose(") for name in path)
           else "forward" if differentiated or modules else "update")
  if modules:
    return f"{phase} {'/'.join(modules)}"
  model = differentiated[-1] if differentiated else ""
  return f"{phase} {model} ({path[-1]})" if model else f"{phase} ({path[-1]})"


def program_traffic(hlo: str) -> dict:
  """{'passes': [{'computation', 'runs', 'bytes_per_run', 'largest': {fusion: bytes}}],
  'by_part': {part_of_step: bytes, largest first}, 'total_bytes'}: the memory traffic of the
  program's fusions, matmuls and kernels left out."""
  found = computations(hlo)
  entry = re.search(r"^ENTRY %(\S+) ", hlo, re.MULTILINE).group(1)
  runs = _runs(found, entry)
  passes, total, by_part = [], 0, collections.Counter()
  for name, count in runs.items():
    per_fusion = collections.Counter()
    for line in found.get(name, []):
      match = _INSTRUCTION.match(line)
      callee = re.search(r"calls=%([^,\s]+)", line)
      # An asynchronous fusion: in XLA's dumps an async-start whose computation holds the
      # fusion (followed by _runs), in a compiled program's as_text() a fusion-start
      if not match or match.group(4) not in ("fusion", "fusion-start") or not callee:
        continue
      body = found.get(callee.group(1), [])
      if _is_matmul_or_kernel(body):
        continue
      read, wrote = fusion_bytes(body)
      per_fusion[match.group(2)] += read + wrote
      by_part[part_of_step(line)] += count * (read + wrote)
    per_run = sum(per_fusion.values())
    total += count * per_run
    passes.append({"computation": name, "runs": count, "bytes_per_run": per_run,
                   "largest": dict(per_fusion.most_common(8))})
  return {"passes": passes, "by_part": {part: size for part, size in by_part.most_common()
                                        if size}, "total_bytes": total}


def _operand(line: str, op: str) -> str:
  """The name of an instruction line's first operand (with or without its shape written)."""
  return re.findall(r"%([^\s,()]+)", line[line.index(f" {op}("):])[0]


def host_copies(hlo: str) -> dict:
  """{'copies', 'bytes', 'beside_loops_bytes'} of the asynchronous copies into host memory
  (`copy-start` ops whose result is in memory space S(5)) in the entry computation of a
  scheduled program (XLA dumps and `compiled.as_text()` list it in the order it runs). A copy
  whose `copy-start` and `copy-done` enclose a loop (the layer loops, where the step's compute
  is) may run beside that loop; one that does not can only hide behind the top-level ops
  between its two ends, as a `copy-done` makes the compute stream wait for its copy. (Only
  loops in the entry computation itself are seen, not those inside a called computation.)"""
  entry = re.search(r"^ENTRY %(\S+) ", hlo, re.MULTILINE).group(1)
  started, found = {}, {"copies": 0, "bytes": 0, "beside_loops_bytes": 0}
  loops_seen = 0
  for line in computations(hlo)[entry]:
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, op = match.group(2), match.group(3), match.group(4)
    if op == "while":
      loops_seen += 1
    elif op == "copy-start" and "S(5)" in _FIRST_ARRAY.match(shape).group(1):
      started[name] = (array_bytes(_FIRST_ARRAY.match(shape).group(1)), loops_seen)
    elif op == "copy-done" and _operand(line, op) in started:
      size, loops_then = started.pop(_operand(line, op))
      found["copies"] += 1
      found["bytes"] += size
      found["beside_loops_bytes"] += size if loops_seen > loops_then else 0
  return found


def compiled_train_step(config, name: str) -> tuple[str, bool]:
  """(the optimized HLO text of config's train step compiled here for the NVIDIA GPUs `name`,
  whether it fits their memory). One that does not fit is still read, with a warning."""
  if not gpu_topology.is_gpu_name(name):
    raise ValueError(f"--traffic_topology={name}: name NVIDIA GPUs (h100, h200-8, h100:2x8); "
                     "the counts do not read TPU programs' tiled layouts.")
  # Compile-only GPU devices need no backend here, as in aot.
  jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")
  log.info("Compiling the %d-layer train step for %s here (minutes on a small machine)...",
           config.model.num_layers, name)
  compiled = []
  try:
    aot.compile_for_slice(config, gpu_topology.parse_gpus(name), on_compiled=compiled.append)
  except aot.DoesNotFit as error:
    if not compiled:  # the compiler itself gave up on the memory
      raise ValueError(f"does not fit: {error}") from None
    log.warning("does not fit: %s", error)
    return compiled[0].as_text(), False
  return compiled[0].as_text(), True


def main(config, argv) -> None:
  del argv
  path, name = flags.FLAGS.traffic_hlo, flags.FLAGS.traffic_topology
  if bool(path) == bool(name):
    raise ValueError("--what=traffic needs one of --traffic_topology=GPUS (h100, h200-8: the "
                     "config's train step, compiled here) and --traffic_hlo=FILE (an optimized "
                     "HLO text that XLA dumped: XLA_FLAGS='--xla_dump_to=DIR "
                     "--xla_dump_hlo_as_text').")
  where = {}
  if name:
    hlo, fits = compiled_train_step(config, name)
    where = {"topology": name, "fits": fits}
  else:
    with open(path, encoding="utf-8") as file:
      hlo = file.read()
  print(json.dumps({"what": "traffic", **program_traffic(hlo), "host_copies": host_copies(hlo),
                    **where}))
