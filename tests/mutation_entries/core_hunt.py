"""Planted bugs in the core modules a second time: checkpoints, the step, the mesh and host
rows, the snapshot's host copy, logs, aot's report, sources, the workdir's checks, restore
verdicts, metrics, the attention pick, the loop, the optimizer, infilling and the pipeline."""
from mutation_entries import Mutation

_CK, _ST, _PA = "glmjax/checkpoint.py", "glmjax/step.py", "glmjax/parallel.py"
_HC, _LG, _AOT = "glmjax/host_copy.py", "glmjax/logs.py", "glmjax/aot.py"
_RL = "glmjax/run_log.py"
_SO, _WD, _RA = "glmjax/data/sources.py", "glmjax/workdir.py", "glmjax/restore_agreement.py"
_ME, _AC, _LP = "glmjax/metrics.py", "glmjax/attention_choice.py", "glmjax/loop.py"
_OP, _IN, _PL = "glmjax/optim.py", "glmjax/data/infilling.py", "glmjax/data/pipeline.py"
_CKT = ("tests/test_checkpoint.py", "tests/test_checkpoint_damage.py")
_STT = ("tests/test_train_step.py", "tests/test_objective.py")
_PAT = ("tests/test_parallel.py", "tests/test_host_input.py")
_SNAP = ("tests/test_device_snapshot.py",)
_LOGS = ("tests/test_logs.py",)
_DATA = ("tests/test_data_inputs.py", "tests/test_sources.py")
_MET = ("tests/test_metrics.py", "tests/test_loop.py")
_OPT = ("tests/test_optim.py",)
_INF = ("tests/test_infilling.py", "tests/test_pipeline.py", "tests/test_pipeline_objectives.py")
_PIPE = ("tests/test_pipeline.py", "tests/test_pipeline_objectives.py", "tests/test_data_inputs.py",
         "tests/test_recipe.py")

ENTRIES: tuple[Mutation, ...] = (
    # Checkpoints (checkpoint.py).
    Mutation("a layout error of exactly three differences adds '... 0 more'", _CK,
             "if len(problems) > limit else []", "if len(problems) >= limit else []", _CKT),
    Mutation("a layout error says an array only the checkpoint has is only in the model", _CK,
             'problems.append(f"{name}: in the checkpoint, not in the model")',
             'problems.append(f"{name}: in the model, not in the checkpoint")',
             _CKT + ("tests/test_faults.py",)),
    Mutation("a damaged step's Orbax temporary folder stays behind when it is moved aside", _CK,
             'if path.name.split(".")[0] in {str(step) for step in steps}:',
             'if path.name in {str(step) for step in steps}:', _CKT),
    Mutation("a restore failure that does not say damaged is skipped as damage", _CK,
             '      if kind == "damaged":\n', '      if kind != "unreadable":\n', _CKT),
    Mutation("checkpoint.keep keeps one checkpoint more than asked", _CK,
             "max_to_keep=int(keep),", "max_to_keep=int(keep) + 1,", _CKT),
    Mutation("a bucket checkpoint folder is made a local path", _CK,
             "return path if paths.is_remote(path) else os.path.abspath(path)",
             "return os.path.abspath(path)", _CKT),
    # The step (step.py).
    Mutation("the update is committed when any array of it is finite, not every one", _ST,
             "return jnp.all(jnp.stack(checks)) if checks",
             "return jnp.any(jnp.stack(checks)) if checks", _STT),
    Mutation("the gradients are the Part B sum, not its mean", _ST,
             "grads = jax.tree.map(lambda g: g / rows, grads)", "grads = grads", _STT),
    Mutation("accuracy is counted over every token of the batch, not the Part B ones", _ST,
             '"accuracy": sums["correct"] / weight,',
             '"accuracy": sums["correct"] / batch["tokens"].size,', _STT),
    Mutation("per-objective correct counts add the rows' token counts", _ST,
             '"objective_correct": row_correct @ objective,',
             '"objective_correct": row_weight @ objective,',
             ("tests/test_evaluate.py", "tests/test_train_step.py")),
    Mutation("the parameters are initialised from key 0, whatever config.seed", _ST,
             "return jax.jit(unboxed, out_shardings=shardings)(jax.random.key(seed))",
             "return jax.jit(unboxed, out_shardings=shardings)(jax.random.key(0))", _STT),
    Mutation("the compiled step expects an int32 loss_mask", _ST,
             'dtype = jnp.float32 if key == "loss_mask" else jnp.int32', "dtype = jnp.int32",
             ("tests/test_train_step.py", "tests/test_xla_options.py")),
    # Mesh and host rows (parallel.py).
    Mutation("a host's devices each take its first rows, not their own", _PA,
             "shards = {(start, stop): np.searchsorted(rows, np.arange(start, stop))",
             "shards = {(start, stop): np.arange(stop - start)", _PAT),
    Mutation("the mesh names its axes in reverse order", _PA,
             "              MESH_AXES)\n\n\ndef device_grid",
             "              MESH_AXES[::-1])\n\n\ndef device_grid", _PAT),
    Mutation("mesh.rules from a JSON config keep their axes as lists", _PA,
             "return tuple((name, tuple(axes) if isinstance(axes, list) else axes) "
             "for name, axes in rules)",
             "return tuple((name, axes) for name, axes in rules)",
             ("tests/test_config_validation.py", "tests/test_config_attention.py",) + _PAT),
    Mutation("the replicated share counts arrays, not their elements", _PA,
             "    size = math.prod(leaf.shape)\n", "    size = 1\n", ("tests/test_train_step.py",)),
    Mutation("a tensor group's hosts are counted along the data axis", _PA,
             "for group in grid.reshape(-1, shape[-1]))",
             "for group in grid.reshape(shape[0], -1))",
             ("tests/test_host_input.py",)),
    # A snapshot's host copy (host_copy.py).
    Mutation("a snapshot in parts is cut into fewer parts than asked", _HC,
             "if len(runs_under(middle)) <= parts else", "if len(runs_under(middle)) < parts else",
             _SNAP),
    Mutation("a snapshot's bytes are every array's global size, not this process's shards", _HC,
             "  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)\n"
             "             for shard in key_free(leaf).addressable_shards)",
             "  return sum(key_free(leaf).nbytes for leaf in jax.tree.leaves(tree))",
             _SNAP + ("tests/test_bench_save.py",)),
    Mutation("a PRNG key array is sent to pinned host memory", _HC,
             "          and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)\n", "", _SNAP),
    # Logs (logs.py).
    Mutation("every process logs to train.log", _RL,
             'name = "train.log" if process_index == 0 else f"train.process-{process_index}.log"',
             'name = "train.log"', _LOGS),
    Mutation("Orbax's ERROR records reach the console", _LG,
             "orbax in record.pathname and record.levelno >= logging.ERROR:",
             "orbax in record.pathname and record.levelno > logging.ERROR:", _LOGS),
    Mutation("Orbax's read-only notices reach the console", _LG,
             "return not any(notice in message for notice in _ORBAX_NOISE)",
             "return True", _LOGS),
    Mutation("a bucket run's log copy holds the earlier runs' lines too", _RL,
             "self._start = os.path.getsize(local) if os.path.exists(local) else 0",
             "self._start = 0", _LOGS),
    Mutation("glmjax's lines also reach the root logger (twice on the console)", _LG,
             "  ours.propagate = False\n", "  ours.propagate = True\n", _LOGS),
    Mutation("a failed command exits 1 whatever status it was given", _LG,
             "  raise SystemExit(status) from None\n\n\ndef fail_keeping_traceback",
             "  raise SystemExit(1) from None\n\n\ndef fail_keeping_traceback",
             _LOGS + ("tests/test_cli.py",)),
    # aot (aot.py).
    Mutation("aot's out-of-HBM line swaps the need and the limit", _AOT,
             "for i in (1, 3))", "for i in (3, 1))", ("tests/test_aot_report.py",)),
    Mutation("aot reads libtpu's G as 10^9 bytes", _AOT,
             '"G": 2**30,', '"G": 10**9,', ("tests/test_aot_report.py",)),
    Mutation("aot counts a device snapshot with checkpoint.every=0", _AOT,
             "deferred = config.checkpoint.device_snapshot and int(config.checkpoint.every) > 0",
             "deferred = config.checkpoint.device_snapshot",
             ("tests/test_aot.py::test_a_device_snapshot_save_s_copy_of_the_state_counts_in_"
              "the_peak",)),
    # Sources (data/sources.py).
    Mutation("in-memory documents' offsets lose their leading 0", _SO,
             "offsets = np.concatenate([[0], np.cumsum(np.frombuffer(lengths, np.int64))])",
             "offsets = np.cumsum(np.frombuffer(lengths, np.int64))", _DATA),
    Mutation("a document is lost at each chunk of 256 texts to encode", _SO,
             "chunk = [text for _, text in zip(range(batch), texts)]",
             "chunk = [text for text, _ in zip(texts, range(batch))]", _DATA),
    Mutation("cgroup v2's 'max' (no limit) ends the memory budget in a ValueError", _SO,
             "    if text.isdigit():", "    if text:", _DATA),
    Mutation("the held-out split is returned as the training one", _SO,
             "return ids[~held_out], ids[held_out]", "return ids[held_out], ids[~held_out]", _DATA),
    # The workdir's checks (workdir.py).
    Mutation("train.allow_config_change=true still refuses a changed config", _WD,
             "if changes and not allow:", "if changes:",
             ("tests/test_workdir.py", "tests/test_faults.py")),
    Mutation("train.allow_config_change=true still refuses a changed corpus", _WD,
             '  if allow:\n    log.warning("Resuming with a changed corpus (allowed): %s.", '
             'change)\n    return\n', "", ("tests/test_workdir.py",)),
    Mutation("train.compilation_cache_dir is ignored for the workdir's xla_cache", _WD,
             'return configured or os.path.join(workdir, "xla_cache")',
             'return os.path.join(workdir, "xla_cache")', ("tests/test_compilation_cache.py",)),
    Mutation("the lock file keeps the earlier holders' lines", _WD,
             "  handle.truncate()\n", "", ("tests/test_workdir.py",)),
    # Restore verdicts (restore_agreement.py).
    Mutation("a host that read fine goes on though the barrier says another failed", _RA,
             '    return failure or ("peer", "the read failed on another host '
             "(see that host's log)\")",
             "    return failure", ("tests/test_fault_verdicts.py",)),
    Mutation("the mildest verdict of any host holds for all", _RA,
             "worst = int(np.max(multihost_utils.process_allgather(np.int32(mine))))",
             "worst = int(np.min(multihost_utils.process_allgather(np.int32(mine))))",
             ("tests/test_fault_verdicts.py",)),
    # Metrics (metrics.py).
    Mutation("TFLOP/s per device is the whole job's", _ME,
             "tflops_per_device = flops_per_step / step_time_s / num_devices / 1e12",
             "tflops_per_device = flops_per_step / step_time_s / 1e12", _MET),
    Mutation("a prefixed record (eval_) is written under the training names", _ME,
             'clean = {f"{prefix}{k}": _to_float(v) for k, v in scalars.items()}',
             "clean = {k: _to_float(v) for k, v in scalars.items()}", _MET),
    Mutation("an objective's loss is divided by every objective's tokens", _ME,
             'count = float(sums["objective_weight"][index])',
             'count = float(np.sum(sums["objective_weight"]))',
             _MET + ("tests/test_evaluate.py",)),
    # The attention pick (attention_choice.py).
    Mutation("auto ignores the candidates it is given", _AC,
             "for candidate in candidates or auto_order(platform):",
             "for candidate in auto_order(platform):", ("tests/test_attention_choice.py",)),
    Mutation("a program for another platform is built for this host's", _AC,
             "model_config.target_platform = platform",
             "model_config.target_platform = host_platform",
             ("tests/test_attention_choice.py::test_a_program_for_another_platform_carries_that_"
              "platform_and_its_kernel",)),
    Mutation("an evaluation's auto means xla when training would use attention dropout", _AC,
             "needs_dropout = training and config.model.attention_dropout > 0",
             "needs_dropout = config.model.attention_dropout > 0",
             ("tests/test_attention_choice.py", "tests/test_config_validation.py", "tests/test_config_attention.py")),
    # The loop (loop.py).
    Mutation("a second SIGTERM stops at once like a second Ctrl-C", _LP,
             "if signum == signal.SIGINT and self.requested:", "if self.requested:",
             ("tests/test_loop.py::test_a_sigterm_says_what_it_stops_in_each_phase_of_a_run",)),
    # The optimizer (optim.py).
    Mutation("optim.grad_clip=0 clips every gradient to zero", _OP,
             "if optim_config.grad_clip > 0:", "if optim_config.grad_clip >= 0:",
             _OPT + ("tests/test_train_step.py",)),
    Mutation("optim.moments_dtype's two values do each other's job", _OP,
             'in_float32(adamw) if optim_config.moments_dtype == "float32" else adamw',
             'in_float32(adamw) if optim_config.moments_dtype == "param" else adamw', _OPT),
    Mutation("the decay runs over decay_steps from step 0, not from the warmup's end", _OP,
             "max(decay_steps - warmup, 1)", "max(decay_steps, 1)", _OPT),
    Mutation("the cosine decay runs a quarter wave", _OP,
             "jnp.cos(jnp.pi * progress)", "jnp.cos(jnp.pi / 2 * progress)", _OPT),
    # Infilling (data/infilling.py).
    Mutation("Part B puts the unused slots before the row's spans", _IN,
             "rng.uniform(stream, k_max), 2.0)", "rng.uniform(stream, k_max), -1.0)", _INF),
    Mutation("a row's first padding position counts as real (and scored)", _IN,
             "real = col < total[:, None]", "real = col <= total[:, None]", _INF),
    Mutation("a suffix [gMASK] row gets the inner layout's text length and back", _IN,
             "text_len = np.where(suffix, seq_len - 1, seq_len - 2)",
             "text_len = np.where(suffix, seq_len - 2, seq_len - 1)", _INF),
    # The pipeline (data/pipeline.py).
    Mutation("a document starting at the window's end writes its [CLS] past it", _PL,
             "used = start < window_len", "used = start <= window_len", _PIPE),
    Mutation("a row is short by the same draw that sizes it", _PL,
             "fetch = np.where(short[:, 0] < self.short_seq_prob,",
             "fetch = np.where(short[:, 1] < self.short_seq_prob,", ("tests/test_recipe.py",)),
    Mutation("data.seq_len equal to the shortest it may be is refused", _PL,
             "if int(data.seq_len) < shortest:", "if int(data.seq_len) <= shortest:",
             ("tests/test_config_validation.py", "tests/test_config_attention.py", "tests/test_data_inputs.py")),
    Mutation("a tokenizer whose pad is its eos (as GLM's) is refused", _PL,
             'distinct = {name: token for name, token in specials.items() if name != "pad"}',
             "distinct = dict(specials)", _PIPE),
    Mutation("the planned Part B share leaves [sMASK] rows out", _PL,
             '{"blank": blank, "sentence": masked,', '{"blank": blank, "sentence": 0.0,',
             ("tests/test_flops.py", "tests/test_pipeline_objectives.py")),
)
