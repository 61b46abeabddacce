"""Planted bugs of the prose audit of the README's run sections (What happens in a run, Outputs,
Checkpoints): the state made in its shardings, the profiler's trace folder, and the fields a
resume may change."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = (
    # step.py: the new state comes out in its shardings (no device holds it whole).
    Mutation("the new state's jit drops its out_shardings", "glmjax/step.py",
             "  return jax.jit(unboxed, out_shardings=shardings)(jax.random.key(seed))",
             "  return jax.jit(unboxed)(jax.random.key(seed))",
             ("tests/test_train_step.py::test_the_state_is_created_on_the_devices_in_its_"
              "shardings_never_whole_on_one",)),
    Mutation("the new state is made whole, then moved to its shardings", "glmjax/step.py",
             "  return jax.jit(unboxed, out_shardings=shardings)(jax.random.key(seed))",
             "  return jax.device_put(jax.jit(unboxed)(jax.random.key(seed)), shardings)",
             ("tests/test_train_step.py::test_the_state_is_created_on_the_devices_in_its_"
              "shardings_never_whole_on_one",)),
    # train.py: the profiler writes where TensorBoard reads the run's events.
    Mutation("the profiler's trace goes to the workdir, not its tensorboard folder",
             "glmjax/train.py",
             "loop.Profiler(config, writer.tensorboard_dir, enabled",
             "loop.Profiler(config, workdir, enabled",
             ("tests/test_loop.py::test_a_run_s_profiler_trace_lands_in_its_tensorboard_folder_"
              "under_plugins_profile",)),
    # config.py: the attention kernel may change on resume (a checkpoint records the resolved one).
    Mutation("a resume under another attention kernel counts as a config change",
             "glmjax/config.py",
             'FREE_FIELDS = ("model.attention", "model.remat",',
             'FREE_FIELDS = ("model.remat",',
             ("tests/test_faults.py::test_only_fields_that_change_what_is_computed_count_as_a_"
              "change",)),
)
