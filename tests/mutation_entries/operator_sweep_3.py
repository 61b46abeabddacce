"""Planted bugs from session 42's operator sweep (one token changed at a time in aot, the GPU
machines, the benchmarks, splash, the checksums and the host copies) that passed the tests of
their module: a checksum hash that changes between versions, the prepare benchmark's clocks
added instead of subtracted, its one-core figure prepared by two workers and its windows read
from each document's start, the profile benchmark tracing three steps whatever --steps asks,
the traffic benchmark's compile starting an attached accelerator, a snapshot sent to a device's
missing pinned memory, and aot's report naming a TPU's memory as a GPU's, dropping a stray
argument or reading libtpu's terabytes at the wrong scale."""
from mutation_entries import Mutation

_PREPARE = "tests/test_bench_prepare.py::"
_SAME_HASH = ("tests/test_checkpoint_damage.py::test_the_checksum_is_the_same_hash_in_every_"
              "version_so_old_checkpoints_still_verify",)
_MIX = "  mixed = bits * jnp.uint32(0x9E3779B1) + index * jnp.uint32(0x85EBCA77) + jnp.uint32(1)"

ENTRIES = (
    Mutation("the checksum hash subtracts the index's mix", "glmjax/checksums.py", _MIX,
             _MIX.replace(" + index", " - index"), _SAME_HASH),
    Mutation("the checksum hash drops its constant", "glmjax/checksums.py", _MIX,
             _MIX.replace("jnp.uint32(1)", "jnp.uint32(0)"), _SAME_HASH),
    Mutation("the prepare benchmark adds its start time to the preparing time",
             "glmjax/bench/prepare.py", "    prepare_seconds = time.perf_counter() - start",
             "    prepare_seconds = time.perf_counter() + start",
             (_PREPARE + "test_the_prepare_benchmark_counts_the_shards_it_wrote_of_a_"
              "source_it_did_not_finish",)),
    Mutation("the prepare benchmark's one-core figure is prepared by two workers",
             "glmjax/bench/prepare.py", "prepare.prepare(data, out, workers=1,",
             "prepare.prepare(data, out, workers=2,",
             (_PREPARE + "test_the_prepare_benchmark_prepares_with_one_worker_as_its_"
              "figure_s_name_says",)),
    Mutation("the prepare benchmark's read loop adds its start time", "glmjax/bench/prepare.py",
             "  while time.perf_counter() - start < seconds:",
             "  while time.perf_counter() + start < seconds:",
             (_PREPARE + "test_the_prepare_benchmark_s_read_rate_is_the_tokens_of_its_"
              "windows_over_the_time",)),
    Mutation("the profile benchmark traces its default steps whatever --steps says",
             "glmjax/bench/profile.py", "  steps = flags.FLAGS.steps or DEFAULT_STEPS",
             "  steps = flags.FLAGS.steps and DEFAULT_STEPS",
             ("tests/test_bench_profile.py::test_the_profile_benchmark_traces_the_steps_asked_for_"
              "into_the_folder_asked_for",)),
    Mutation("the traffic benchmark's compile starts whatever accelerator is attached",
             "glmjax/bench/traffic.py",
             '  jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")',
             '  jax.config.update("jax_platforms", jax.config.jax_platforms and "cpu")',
             ("tests/test_bench_traffic.py::test_the_compile_runs_on_the_cpu_backend_unless_"
              "jax_platforms_names_another",)),
    Mutation("a device without pinned host memory is sent a snapshot's copy",
             "glmjax/host_copy.py",
             "    return any(memory.kind == PINNED for memory in device.addressable_memories())",
             "    return any(memory.kind != PINNED for memory in device.addressable_memories())",
             ("tests/test_device_snapshot.py::test_only_a_device_that_lists_pinned_host_memory_"
              "counts_as_having_some",)),
    Mutation("the prepare benchmark reads every window from its document's first token",
             "glmjax/bench/prepare.py",
             "    starts = (rng.random(rows) * (store.doc_lengths[docs] - lengths + 1))",
             "    starts = (rng.random(rows) / (store.doc_lengths[docs] - lengths + 1))",
             (_PREPARE + "test_the_prepare_benchmark_reads_its_windows_from_anywhere_in_"
              "a_document",)),
    Mutation("aot's report names a TPU's memory as the GPU's share", "glmjax/aot.py",
             '      + ("HBM" if report.platform == "tpu" else',
             '      + ("HBM" if report.platform != "tpu" else',
             ("tests/test_aot_report.py::test_a_slice_s_peak_is_given_against_its_hbm_and_a_"
              "gpu_s_against_jax_s_share_of_it",)),
    Mutation("aot drops a single stray argument", "glmjax/aot.py", "  if len(argv) > 1:",
             "  if len(argv) > 2:",
             ("tests/test_aot.py::test_even_one_stray_argument_is_a_mistake_in_the_command_"
              "before_anything_compiles",)),
    Mutation("aot reads a need in libtpu's terabytes at the wrong scale", "glmjax/aot.py",
             '"G": 2**30, "T": 2**40}', '"G": 2**30, "T": 3**40}',
             ("tests/test_aot_report.py::test_a_need_of_terabytes_in_libtpu_s_message_is_read_"
              "in_tib",)),
)
