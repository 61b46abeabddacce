"""Planted bugs in the training command's main loop, its inputs, the optimizer and evaluation."""
from mutation_entries import Mutation

_LOOP = "tests/test_loop.py::"
_OPTIM = "tests/test_optim.py::"
_STARTUP = "tests/test_train_startup.py::"
_CONSTANT = _OPTIM + "test_the_constant_schedule_warms_up_then_holds_the_peak_rate"
_PROFILER = _LOOP + "test_the_profiler_traces_profile_steps_steps_from_profile_start"
_TIMED = _LOOP + "test_a_log_line_s_step_time_leaves_out_the_evaluation_and_the_save_before_it"
_VOCAB = "if tokenizer.ids_used > config.model.vocab_size:"

ENTRIES: tuple[Mutation, ...] = (
    Mutation("the constant schedule skips its warmup", "glmjax/optim.py",
             "    return jnp.where(step < warmup, warm, decayed)",
             "    return decayed if kind == 'constant' else "
             "jnp.where(step < warmup, warm, decayed)",
             (_CONSTANT,)),
    Mutation("the constant schedule holds final_ratio x the peak", "glmjax/optim.py",
             "decayed = jnp.full_like(step, peak)",
             "decayed = jnp.full_like(step, peak * final_ratio)", (_CONSTANT,)),
    Mutation("the linear decay's floor is final_ratio itself, not x the peak", "glmjax/optim.py",
             "decayed = peak * (1 - (1 - final_ratio) * progress)",
             "decayed = peak * (1 - progress) + final_ratio * progress",
             (_OPTIM + "test_the_decay_ends_at_final_ratio_times_the_peak_rate_whatever_the_"
                       "peak",)),
    Mutation("the ETA counts every step of the run, not those left", "glmjax/loop.py",
             'eta = (seconds or float("nan")) * (self.total_steps - step_done)',
             'eta = (seconds or float("nan")) * self.total_steps',
             (_LOOP + "test_a_log_line_s_eta_is_the_steps_left_times_the_step_time",)),
    Mutation("a resumed run's first step time counts from step 0", "glmjax/loop.py",
             "    self.clock.lap(start)\n", "    self.clock.lap(0)\n",
             (_LOOP + "test_the_first_log_line_of_a_resumed_run_times_only_the_steps_it_ran",)),
    Mutation("the profiler traces one step more than asked", "glmjax/loop.py",
             "if self.tracing and step_done >= self.end:",
             "if self.tracing and step_done > self.end:", (_PROFILER,)),
    Mutation("profile_start=0 never traces", "glmjax/loop.py",
             "enabled and self.first >= 0", "enabled and self.first > 0", (_PROFILER,)),
    Mutation("an evaluation's time counts in the next log line's step time", "glmjax/train.py",
             '                 scalars["loss"], scalars["accuracy"], scalars["perplexity"])\n'
             "        reporter.restart_clock(done)\n",
             '                 scalars["loss"], scalars["accuracy"], scalars["perplexity"])\n',
             (_TIMED,)),
    Mutation("a save's time counts in the next log line's step time", "glmjax/train.py",
             "                        defer=config.checkpoint.device_snapshot)\n"
             "        reporter.restart_clock(done)\n",
             "                        defer=config.checkpoint.device_snapshot)\n", (_TIMED,)),
    Mutation("a SIGTERM off the checkpoint grid saves nothing", "glmjax/train.py",
             "if checkpointer.should_save(done) or preempted:",
             "if checkpointer.should_save(done):",
             (_LOOP + "test_a_sigterm_mid_run_saves_the_step_it_came_in_off_the_checkpoint_grid_"
              "and_stops",)),
    Mutation("config.json keeps attention='auto', not the kernel that ran", "glmjax/train.py",
             "  resolved.model.attention = model_config.attention\n", "",
             (_LOOP + "test_config_json_holds_the_attention_the_run_resolved_auto_to",)),
    Mutation("a vocabulary exactly the tokenizer's ids is refused", "glmjax/train.py",
             _VOCAB, "if tokenizer.ids_used >= config.model.vocab_size:",
             (_STARTUP + "test_a_model_vocabulary_exactly_the_tokenizer_s_ids_is_accepted",)),
    Mutation("train does not check the vocabulary against the tokenizer", "glmjax/train.py",
             _VOCAB, "if False:",
             (_STARTUP + "test_a_model_vocabulary_smaller_than_the_tokenizer_s_is_refused_naming_"
              "the_size_to_set",)),
    Mutation("train's start-up check ignores the device count", "glmjax/train.py",
             "config_lib.validate(config, num_devices=jax.device_count(),",
             "config_lib.validate(config, num_devices=None,",
             (_STARTUP + "test_a_mesh_that_cannot_split_the_model_over_these_devices_is_refused_"
              "before_compiling",)),
    Mutation("non-finite steps end as a bug's 'Stopped by' line", "glmjax/train.py",
             "StartupError, loop.NonFiniteError,", "StartupError,",
             ("tests/test_faults.py::test_a_run_stopped_by_non_finite_steps_ends_in_its_message_"
              "not_as_a_bug",)),
    Mutation("Ctrl-C kills a training run without saving the step it came in",
             "glmjax/loop.py", "        for signum in (signal.SIGTERM, signal.SIGINT):",
             "        for signum in (signal.SIGTERM,):",
             ("tests/test_loop.py::test_a_first_ctrl_c_saves_the_step_it_came_in_and_a_second_"
              "stops_at_once",)),
    Mutation("a second Ctrl-C waits for the save like the first",
             "glmjax/loop.py", "      raise KeyboardInterrupt  # the second Ctrl-C",
             "      pass  # the second Ctrl-C",
             ("tests/test_loop.py::test_a_first_ctrl_c_saves_the_step_it_came_in_and_a_second_"
              "stops_at_once",)),
    Mutation("Ctrl-C ends a command with a traceback", "glmjax/cli.py",
             "    except KeyboardInterrupt:  # Ctrl-C", "    except ZeroDivisionError:  # Ctrl-C",
             ("tests/test_cli.py::test_ctrl_c_ends_a_command_in_one_line_with_the_shell_s_status_"
              "for_sigint",)),
    Mutation("a command Ctrl-C ended runs the exit that crashes under a compile cut short",
             "glmjax/cli.py", "      logs.exit_at_once(logs.INTERRUPTED)", "      pass",
             ("tests/test_cli.py::test_ctrl_c_during_a_compile_ends_the_command_with_status_130_"
              "not_a_crash",)),
    Mutation("a command Ctrl-C ended leaves before a save under way is written",
             "glmjax/logs.py", "      if thread is not current and not thread.daemon:",
             "      if False:",
             ("tests/test_cli.py::test_a_command_ctrl_c_ended_waits_for_its_threads_that_are_"
              "not_daemons",)),
    Mutation("training starts hearing a Ctrl-C its shell told it to ignore", "glmjax/loop.py",
             "if signum != signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:",
             "if True:",
             ("tests/test_loop.py::test_an_ignored_ctrl_c_stays_ignored_and_a_sigterm_is_still_"
              "heard",)),
    Mutation("after training a SIGTERM still promises a save", "glmjax/train.py",
             "      termination.leave_loop()  # the last save", "      pass  # the last save",
             ("tests/test_train.py::test_a_sigterm_after_training_returned_is_not_taken_for_one_"
              "in_the_loop",)),
    Mutation("a SIGTERM says the same in every phase", "glmjax/loop.py",
             '                "ended": "training has ended (nothing new to save)"}[self._phase]',
             '                "ended": "saving a checkpoint and stopping"}[self._phase]',
             ("tests/test_loop.py::test_a_sigterm_says_what_it_stops_in_each_phase_of_a_run",)),
    Mutation("train says nothing of a vocabulary that is not a multiple of 128",
             "glmjax/train.py",
             "    if vocab_warning := config_lib.vocab_size_warning(config.model):\n"
             "      log.warning(vocab_warning)\n", "",
             ("tests/test_config_validation.py::test_a_vocabulary_not_a_multiple_of_128_is_"
              "accepted_and_train_warns_of_it_once",)),
    Mutation("train reports running out of device memory as a bug, with no advice",
             "glmjax/train.py",
             "      if (reason := memory_lib.out_of_memory(error)) is not None:",
             "      if (reason := memory_lib.out_of_memory(error)) is None and False:",
             ("tests/test_faults.py::test_a_run_out_of_device_memory_is_one_line_with_what_to_"
              "change_not_a_bug_report",)),
    Mutation("any RESOURCE_EXHAUSTED (a bucket's quota) is read as running out of memory",
             "glmjax/memory.py",
             '  if not any(words in text.lower() for words in ("out of memory", "hbm", '
             '"device memory")):\n    return None  # a quota, an RPC\'s limit\n',
             "",
             ("tests/test_faults.py::test_only_xla_running_out_of_device_memory_is_read_as_the_"
              "config_s_size",)),
    Mutation("a kernel's vmem running out is read as the run not fitting", "glmjax/memory.py",
             'if "RESOURCE_EXHAUSTED" not in text or "vmem" in text.lower():',
             'if "RESOURCE_EXHAUSTED" not in text:',
             ("tests/test_faults.py::test_only_xla_running_out_of_device_memory_is_read_as_the_"
              "config_s_size",)),
    Mutation("a command Ctrl-C ended waits for ever on an idle thread pool",
             "glmjax/logs.py",
             '    for call in reversed(getattr(threading, "_threading_atexits", [])):\n      call()\n',
             "",
             ("tests/test_cli.py::test_a_command_ctrl_c_ended_with_idle_pools_and_workers_still_"
              "ends_in_one_line_at_once",)),
    Mutation("a command Ctrl-C ended leaves a worker pool's semaphores to leak",
             "glmjax/logs.py",
             '      sys.modules["multiprocessing.util"]._exit_function()',
             "      pass",
             ("tests/test_cli.py::test_a_command_ctrl_c_ended_with_idle_pools_and_workers_still_"
              "ends_in_one_line_at_once",)),
    Mutation("train never says where the schedule leaves a shortened run", "glmjax/train.py",
             "  log.info(optim.schedule_line(config.optim, total_steps))\n", "",
             ("tests/test_train.py::test_nan_batch_is_skipped_and_logged",)),
    Mutation("the schedule line gives the rate at the decay horizon, not at the run's end",
             "glmjax/optim.py", 'f"{float(schedule(max(last_step - 1, 0))):.2e}")',
             'f"{float(schedule(decay_steps)):.2e}")',
             (_OPTIM + "test_the_start_up_line_gives_the_schedule_and_the_rate_a_shortened_run_"
              "stops_at",)),
    Mutation("a run logging every step says its first step apart instead of its loss line",
             "glmjax/loop.py",
             "    if step_done % log_every and step_done != self.total_steps:\n",
             "    if step_done == self.start + 1 or (step_done % log_every\n"
             "                                       and step_done != self.total_steps):\n",
             ("tests/test_loop.py::test_a_run_logging_every_step_says_its_first_step_once_in_its_"
              "loss_line",)),
)
