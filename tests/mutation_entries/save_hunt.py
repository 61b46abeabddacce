"""Planted bugs in saving and resuming that passed the suite (session 37's checkpoint hunt): a
preemption save left queued, a resume that restarts from init_from, an error swallowed, checksums
of the parameters only, the seed not reaching the data, a last failed save's raw error; and
session 45's review: the newest good step named from Orbax's list alone, a signal's flag lost with
its notice, a preemption that writes two checkpoints."""
from mutation_entries import Mutation

_TRAIN, _CHECKPOINT = "glmjax/train.py", "glmjax/checkpoint.py"
_ERRORS = "tests/test_save_errors.py::"
_CORRUPTED = ("tests/test_checkpoint_damage.py::test_a_restored_state_that_is_not_what_was_saved_"
              "counts_as_corrupted")

ENTRIES = (
    Mutation("a SIGTERM save is forced, not marked a preemption, so a device snapshot queues it",
             _TRAIN, "checkpointer.save(done, state, metadata, preempted=preempted,",
             "checkpointer.save(done, state, metadata, force=preempted,",
             ("tests/test_loop.py::test_a_sigterm_mid_run_saves_the_step_it_came_in_off_the_"
              "checkpoint_grid_and_stops[True]",)),
    Mutation("a run with checkpoint.init_from ignores its own checkpoints when started again",
             _TRAIN, "  restored = checkpointer.restore_latest(",
             "  restored = None if config.checkpoint.init_from else checkpointer.restore_latest(",
             ("tests/test_train.py::test_init_from_another_run_starts_from_its_parameters",)),
    Mutation("a save failing for a reason not the storage's is logged and the run goes on",
             _CHECKPOINT, "      if reason is None:\n        raise\n",
             "      if reason is None:\n        log.error(\"Saving the checkpoint at step %s "
             "failed: %s\", self._saving, error)\n        return\n",
             (_ERRORS + "test_a_save_that_fails_for_another_reason_than_the_storage_s_raises_that_"
              "error", _ERRORS + "test_a_background_write_that_fails_for_another_reason_raises_"
              "that_error_at_the_wait")),
    Mutation("a checkpoint's checksums cover its parameters only", _CHECKPOINT,
             "summary.items()}}", "summary.items() if name.startswith(\"params/\")}}",
             (_CORRUPTED + "[adam's moments]", _CORRUPTED + "[the step]")),
    Mutation("config.seed does not reach the training pipeline (it draws with seed 0)", _TRAIN,
             "    train_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, train_docs,\n"
             "                                                seed=config.seed)\n",
             "    train_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, "
             "train_docs)\n",
             ("tests/test_train_startup.py::test_the_run_s_seed_draws_its_batches_and_another_"
              "seed_other_batches",)),
    Mutation("the last save's failure at close escapes as Orbax's error, not the one line",
             _CHECKPOINT, "    if not self._failed:\n      self.wait()\n",
             "    if not self._failed:\n      self.manager.wait_until_finished()\n",
             (_ERRORS + "test_the_last_save_failing_on_a_full_disk_as_the_checkpointer_closes_is_"
              "named_in_one_line",)),
    Mutation("a failed save names the newest good step from Orbax's list (none yet, with keep=1)",
             _CHECKPOINT, "        self.manager.reload()\n      raise CheckpointWriteError(",
             "        pass\n      raise CheckpointWriteError(",
             (_ERRORS + "test_the_last_save_failing_on_a_full_disk_as_the_checkpointer_closes_is_"
              "named_in_one_line[1]",)),
    Mutation("a SIGTERM's notice that fails to print takes the stop with it", "glmjax/loop.py",
             "with contextlib.suppress(RuntimeError):", "if True:",
             ("tests/test_loop.py::test_a_sigterm_that_lands_inside_a_write_to_stderr_is_still_"
              "heard",)),
    Mutation("a preemption save first writes the queued copy of an earlier step", _CHECKPOINT,
             "if preempted and self._deferred is not None:", "if False:",
             ("tests/test_device_snapshot.py::test_a_preemption_save_drops_a_queued_copy_of_an_"
              "earlier_step",)),
)
