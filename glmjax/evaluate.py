"""python -m glmjax.evaluate --workdir=DIR [--cloze=FILE.jsonl] [--batches=N] [--batch_size=B]

Scores the newest parameters of a workdir (a training run's, or one `pretrained.save` or
`convert import` wrote) and reports, on the console and in --out (default
WORKDIR/eval/step_N.json, or step_N.2.json, ... when that step was evaluated before):
  held-out  loss, Part B accuracy and perplexity, overall and per objective, over the first N
            batches of the run's held-out split, built exactly as `train` builds them
            (held_out.py): with the defaults, the eval/ figures train logs at that step.
  cloze     with --cloze: accuracy, count and mean answer log-likelihood (cloze.py).
--batches=0 skips the held-out report (say, for a workdir whose data is not on this machine;
the command then needs --cloze).
"""
from __future__ import annotations

import json
import logging
import time

import jax
import numpy as np
from absl import app, flags
from etils import epath

from glmjax import checkpoint as checkpoint_lib
from glmjax import cloze as cloze_lib
from glmjax import config as config_lib
from glmjax import cli, distributed, held_out, logs, memory, parallel, paths, pretrained
from glmjax import step as step_lib
from glmjax import workdir as workdir_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources
from glmjax.model import GLM

log = logging.getLogger("glmjax.evaluate")

DATA_SOURCES = "builtin | files:GLOB[,GLOB...] | prepared:DIR | tfds:NAME"


class EvaluateError(ValueError):
  """A workdir, flag, data or cloze-file problem; the message is one line that says the fix."""


def data_overrides(data_source: str | None, batch_size: int | None) -> dict:
  """config.data fields that --data_source and --batch_size replace (checked before loading)."""
  overrides = {}
  if batch_size is not None:
    if batch_size < 1:
      raise EvaluateError(f"--batch_size={batch_size}: must be a positive number of rows.")
    overrides["batch_size"] = batch_size
  if data_source:
    kind, _, value = data_source.partition(":")
    field = sources.DATA_FIELD.get(kind)
    if kind not in sources.SOURCES or (field is None) != (not value):
      raise EvaluateError(f"--data_source={data_source!r}: expected {DATA_SOURCES}.")
    overrides["source"] = kind
    if field:
      # As data.files holds it: one entry, split at its commas only if it names no file.
      overrides[field] = (value,) if kind == "files" else value
  return overrides


def _progress(what: str, total: int):
  """A callback for long loops: logs how far they are and for how long they have run."""
  started = time.monotonic()
  return lambda done: log.info("%s: %d of %d done, %.0f s", what, done, total,
                               time.monotonic() - started)


def held_out_report(pretrained_model, tokenizer, data, batches: int, *,
                    corpus: dict | None = None) -> dict:
  """`corpus`: what the run recorded of its corpus (Pretrained.corpus), to say when the text
  has changed since; None checks nothing."""
  p, config = pretrained_model, pretrained_model.config
  where = f"{p.workdir}/{workdir_lib.CONFIG_FILE}"
  give = (f"give the data with --data_source={DATA_SOURCES} (it sets data.source and "
          "data.files / data.prepared_dir / data.tfds_name), or skip this report with --batches=0")
  if not data.source:
    raise EvaluateError(f"{where} names no held-out data (data.source is empty, as in an imported "
                        f"checkpoint): {give}.")
  if not 0 < float(data.eval_fraction) < 1:
    raise EvaluateError(f"{where} has data.eval_fraction={data.eval_fraction}: the run held out no "
                        "documents; skip the held-out report with --batches=0.")
  if data.batch_size % parallel.batch_axis_size(p.mesh):
    raise EvaluateError(f"--batch_size={data.batch_size} does not split over the "
                        f"{parallel.batch_axis_size(p.mesh)} devices of the batch axes "
                        f"({dict(p.mesh.shape)}); give a multiple of that.")
  try:
    _, eval_docs = sources.load_documents(data, tokenizer)
    # The split is the run's (moving documents into it would score text it trained on).
    advice = f"give a smaller --batch_size (a multiple of {parallel.batch_axis_size(p.mesh)})"
    sources.check_held_out(data, eval_docs, fix=advice)
    pipeline = held_out.eval_pipeline(data, tokenizer, eval_docs, config.seed)
  except (ValueError, FileNotFoundError) as error:
    raise EvaluateError(f"held-out data: {str(error).rstrip('.')}. If the run's data is "
                        f"elsewhere on this machine, {give}.") from error
  change = workdir_lib.corpus_change(corpus, workdir_lib.corpus_record(eval_docs),
                                     sources.source_label(data), f"step {p.step} was trained")
  if change:  # the split is drawn from the whole corpus: other text, other held-out documents
    log.warning("%s: the held-out split is not the run's, so these are not the eval/ figures "
                "train logged.", change)
  held_tokens = int(np.sum(eval_docs.doc_lengths))
  passes = batches * int(data.batch_size) * int(data.seq_len) / max(held_tokens, 1)
  if passes >= 2:  # the rows draw documents again: the figures then narrow less than it seems
    log.info("%d batches of %d rows of %d tokens read about %.0f times the %s tokens of the "
             "held-out split: its documents come back, each time with other blanks.", batches,
             int(data.batch_size), int(data.seq_len), passes, f"{held_tokens:,}")
  # Micro-batches as training ran them (the same peak memory), when the batch still splits so.
  micro = int(config.optim.grad_accum_steps)
  micro = micro if data.batch_size % (micro * parallel.batch_axis_size(p.mesh)) == 0 else 1
  eval_fn = step_lib.jit_eval_step(
      GLM(p.model_config), p.mesh, jax.tree.map(lambda x: x.sharding, p.params),
      micro_batches=micro, loss_chunk=int(config.train.loss_chunk))
  sums = held_out.summed(eval_fn, p.params, pipeline, p.mesh, batches,
                         progress=_progress("held-out batches", batches))
  scalars = held_out.eval_scalars(sums)
  tokens = {f"tokens_{name}": int(sums["objective_weight"][i])
            for i, name in enumerate(pipeline_lib.OBJECTIVE_NAMES)}
  return {"data": sources.source_label(data), "batches": batches, "batch_size": data.batch_size,
          "seq_len": int(data.seq_len), "tokens": int(sums["weight"]), **scalars, **tokens}


def cloze_report(pretrained_model, tokenizer, path: str, examples, batch_size: int) -> dict:
  p = pretrained_model
  limit = cloze_lib.row_limit(p.model_config, p.config.data.seq_len)
  rows, cut = cloze_lib.encode(examples, tokenizer, limit, path)
  log_likelihood, correct = cloze_lib.score(
      p.params, GLM(p.model_config), p.mesh, rows, tokenizer.specials, limit=limit,
      batch_size=batch_size, progress=_progress("cloze texts", len(rows)))
  return {"file": path, "count": len(rows), "correct": int(correct.sum()),
          "accuracy": float(correct.mean()), "mean_log_likelihood": float(log_likelihood.mean()),
          "contexts_cut": cut, "max_row_tokens": limit}


def evaluate(workdir: str, *, cloze: str | None = None, batches: int | None = None,
             batch_size: int | None = None, data_source: str | None = None,
             out: str | None = None) -> dict:
  """The report as a dict (what --out holds); written to `out` by process 0."""
  # Flags and the cloze file first: a mistake fails in a second, not after loading the model.
  examples = cloze_lib.read_examples(cloze) if cloze else None
  overrides = data_overrides(data_source, batch_size)
  if batches is not None and batches < 0:
    raise EvaluateError(f"--batches={batches}: give a number of batches, or 0 to skip.")
  if out and epath.Path(out).is_dir():  # found now, not once every batch has been scored
    raise EvaluateError(f"--out={out} is a folder; give a file path for the JSON report.")
  try:
    # config.json and the tokenizer in seconds, before the parameters take minutes (GLM-10B):
    # an import that stored no tokenizer is refused first.
    tokenizer = pretrained.workdir_tokenizer(pretrained.read_config(workdir, warn=False),
                                             workdir)
    p = pretrained.load(workdir)
    pretrained.check_tokenizer(p, tokenizer)
  except (ValueError, FileNotFoundError) as error:
    raise EvaluateError(str(error)) from error
  if tokenizer.ids_used > p.model_config.vocab_size:
    raise EvaluateError(f"The tokenizer of {workdir} has {tokenizer.ids_used} ids, more than "
                        f"the model's model.vocab_size={p.model_config.vocab_size}: its "
                        "config.json names another tokenizer (data.tokenizer_path); point it "
                        "at the one the model was trained with.")
  data = pretrained.tokenizer_config(p.config, workdir)  # a copy of config.data
  data.update(overrides)
  batches = int(p.config.train.eval_batches) if batches is None else batches
  report = {"workdir": workdir, "step": p.step}
  with parallel.activate(p.mesh, p.rules):
    if batches:
      # Also with --data_source: a corpus moved elsewhere may have been edited on the way.
      report["held_out"] = held_out_report(p, tokenizer, data, batches, corpus=p.corpus)
    if cloze:
      report["cloze"] = cloze_report(p, tokenizer, cloze, examples, int(data.batch_size))
  text = json.dumps(report, indent=2) + "\n"
  # Process 0 writes (and prints, with this path); the others only name where it goes.
  if jax.process_index() != 0:
    report["out"] = out or unused_report_path(workdir, p.step)
    return report
  try:
    report["out"] = write_report(text, out, workdir, p.step)
  except OSError as error:  # the figures are not lost with the file
    print(text, end="", flush=True)
    raise EvaluateError(f"Cannot write the report to {out or workdir + '/eval/'}: "
                        f"{error.strerror or error}; it is printed above.") from error
  return report


def write_report(text: str, out: str | None, workdir: str, step: int) -> str:
  """Writes `text` to `out`, or to the first unused default path, claimed as it is created
  where the file system allows (a local one): two evaluations of one step that run at once
  then write two reports, not one over the other. Returns the path written."""
  for _ in range(100):  # each try is a path that was free a moment before
    path = out or unused_report_path(workdir, step)
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    if out or paths.is_remote(path):  # given, or a bucket, which has no create-if-absent here
      epath.Path(path).write_text(text, encoding="utf-8")
      return path
    try:
      with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)
      return path
    except FileExistsError:  # another evaluation took it since it was found free
      continue
  raise EvaluateError(f"No free report path under {workdir}/eval/ after 100 tries (other "
                      "evaluations of this step keep taking them); give --out=FILE.")


def unused_report_path(workdir: str, step: int) -> str:
  """WORKDIR/eval/step_N.json, or step_N.2.json, step_N.3.json, ... where earlier evaluations
  of that step wrote the first ones: a default path never overwrites a report (its cloze
  figures, say). An explicit --out is written as given."""
  base = f"{workdir}/eval/step_{step}"
  path, count = f"{base}.json", 1
  while epath.Path(path).exists():
    count += 1
    path = f"{base}.{count}.json"
  return path


def _fmt(value, spec: str) -> str:
  """`value` in `spec` ('9.4f'), or n/a right-aligned to the same width; a value too wide for
  it (an untrained model's perplexity, 1e13) in 4 significant digits, so columns stay apart."""
  width = int(spec.split(".")[0])
  if value is None or not np.isfinite(value):
    return f"{'n/a':>{width}}"
  text = format(value, spec)
  return text if text.startswith(" ") else f"{value:>{width}.4g}"


def format_report(report: dict) -> str:
  lines = [f"Evaluation of {report['workdir']} at step {report['step']}"]
  if "held_out" in report:
    h = report["held_out"]
    lines += [f"held-out: {h['batches']} batch{'es' if h['batches'] > 1 else ''} of "
              f"{h['batch_size']} x {h['seq_len']} tokens, {h['data']}",
              f"  {'':10}{'loss':>9}{'accuracy':>10}{'perplexity':>12}{'tokens':>10}"]
    for name in ("all", *pipeline_lib.OBJECTIVE_NAMES):
      key = "" if name == "all" else f"_{name}"
      lines.append(f"  {name:10}{_fmt(h['loss' + key], '9.4f')}"
                   f"{_fmt(h['accuracy' + key], '10.3f')}{_fmt(h['perplexity' + key], '12.2f')}"
                   f"{h['tokens' + key]:>10,}")
  if "cloze" in report:
    c = report["cloze"]
    lines += [f"cloze: {c['file']}, {c['count']:,} texts"
              + (f" ({c['contexts_cut']:,} contexts cut from the left to fit rows of "
                 f"{c['max_row_tokens']} tokens)" if c["contexts_cut"] else ""),
              f"  accuracy {c['accuracy']:.4f} ({c['correct']:,} of {c['count']:,}) | mean answer "
              f"log-likelihood {c['mean_log_likelihood']:.4f}"]
  lines.append(f"written to {report['out']}")
  return "\n".join(lines)


def define_flags() -> None:
  """Command-line flags, defined only when this module is the program (train has --workdir)."""
  flags.DEFINE_string("workdir", None, "A training run's workdir (or an imported one).")
  flags.DEFINE_string("cloze", None, 'JSON lines of {"text": ..., "answer": ...}.')
  flags.DEFINE_integer("batches", None, "Held-out batches (default the run's "
                       "train.eval_batches; 0 skips the held-out report).")
  flags.DEFINE_integer("batch_size", None, "Rows per batch (default data.batch_size).")
  flags.DEFINE_string("data_source", None, f"{DATA_SOURCES}: where the run's corpus is on this "
                      "machine (replaces data.source and its paths).")
  flags.DEFINE_string("out", None, "The JSON report (default WORKDIR/eval/step_N.json; "
                      "step_N.2.json, ... when that step was evaluated before).")


# Errors written for the user: their message is the whole story, no traceback on the console.
_USER_ERRORS = (EvaluateError, cloze_lib.ClozeFileError, config_lib.ConfigError,
                checkpoint_lib.IncompatibleCheckpointError, checkpoint_lib.UnusableCheckpointError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag = flags.FLAGS
  if not flag.workdir:
    raise app.UsageError("--workdir is required.")
  if flag.batches == 0 and not flag.cloze:  # else: the model loaded to write an empty report
    raise app.UsageError("--batches=0 skips the held-out report and no --cloze is given: "
                         "nothing to evaluate; add --cloze=FILE.jsonl or leave --batches out")
  run(flag.workdir, cloze=flag.cloze, batches=flag.batches, batch_size=flag.batch_size,
      data_source=flag.data_source, out=flag.out)


def join_timeout_s(workdir: str) -> int:
  """How long hosts wait for each other to join: the run's train.distributed_timeout_s, or the
  default when its config.json cannot be read (`evaluate` then says why, after the join)."""
  try:
    return int(pretrained.read_config(workdir, warn=False).train.distributed_timeout_s)
  except (OSError, ValueError, TypeError):
    return int(config_lib.train_defaults().distributed_timeout_s)


def run(workdir: str, **kwargs) -> dict:
  """The command: `evaluate`, the report printed, failures as one line (exit status 1)."""
  # Several hosts (a TPU slice, a SLURM job) evaluate together, each feeding its own rows; the
  # join comes before any device is touched, so only the config file is read first.
  logs.setup_console(0)  # every process says it is joining; then process 0 alone says more
  try:
    distributed.initialize(join_timeout_s(workdir))
  except distributed.JoinError as error:
    logs.fail(error)
  logs.setup_console(jax.process_index())
  try:
    report = evaluate(workdir, **kwargs)
  except _USER_ERRORS as error:
    logs.report_failure(error, None, expected=True)
    raise SystemExit(1) from None
  except Exception as error:  # noqa: BLE001 - a bug or unforeseen fault: with its traceback
    if (line := memory.out_of_memory(error)) is not None:  # the batch's size, no bug
      logs.report_failure(EvaluateError(
          f"Out of device memory ({line}); lower --batch_size: held-out batches and cloze "
          "rows are scored that many rows at a time."), None, expected=True)
      raise SystemExit(1) from None
    logs.report_failure(error, None, expected=False)
    raise SystemExit(1) from None
  if jax.process_index() == 0:
    print(format_report(report), flush=True)
  return report


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # a mistyped flag in one line; run() reports evaluate's own failures
