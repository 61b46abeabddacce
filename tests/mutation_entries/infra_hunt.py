"""Planted bugs in the run's infrastructure that passed the suite (session 38): a TPU chip's
usable HBM that is not libtpu's figure, slice names and TPU variables, commands' one-line
errors, the launcher's checks."""
from mutation_entries import Mutation

_T = "tests/test_topology.py::"
_IMPOSSIBLE = _T + "test_impossible_slice_names_say_what_is_wrong_and_what_is_accepted"
_USABLE_HBM = ("tests/test_topology.py::test_a_chip_s_usable_hbm_is_what_libtpu_s_compiler_lets_"
               "one_program_take")

ENTRIES = (
    Mutation("a v6e chip is said to give a program all of its 32 GiB", "glmjax/topology.py",
             "int(31.25 * GIB), 8),", "int(32 * GIB), 8),", (_USABLE_HBM + "[v6e-1]",)),
    Mutation("a 3-D generation given two torus axes is taken for a slice", "glmjax/topology.py",
             "    if len(shape) != generation.dims or min(shape) < 1:",
             "    if len(shape) > generation.dims or min(shape) < 1:",
             (_IMPOSSIBLE + "[v5p:4x4-v5p slices have 3 torus axes]",)),
    Mutation("a torus axis that splits a host's chips is accepted when it is long enough",
             "glmjax/topology.py",
             "    if any(size % bound for size, bound in zip((*shape, 1, 1)[:3], bounds)):",
             "    if any(size < bound for size, bound in zip((*shape, 1, 1)[:3], bounds)):",
             (_IMPOSSIBLE + "[v6e:3x4-every torus axis must be a multiple of that]",)),
    Mutation("describing a slice replaces the user's TPU variables, then removes them",
             "glmjax/topology.py",
             "           else [name for name in values if name not in os.environ])",
             "           else list(values))",
             (_T + "test_describing_a_slice_keeps_the_tpu_variables_the_user_had_set",)),
    Mutation("jax's missing TPU support is not told to install libtpu", "glmjax/topology.py",
             'missing = isinstance(error, ImportError) or "TPU support not installed" in first_line',
             "missing = isinstance(error, ImportError)",
             (_T + "test_without_libtpu_the_error_says_what_to_install",)),
)
