"""Planted bugs in the run's infrastructure that passed the suite (session 38): a TPU chip's
usable HBM that is not libtpu's figure."""
from mutation_entries import Mutation

_USABLE_HBM = ("tests/test_topology.py::test_a_chip_s_usable_hbm_is_what_libtpu_s_compiler_lets_"
               "one_program_take")

ENTRIES = (
    Mutation("a v6e chip is said to give a program all of its 32 GiB", "glmjax/topology.py",
             "int(31.25 * GIB), 8),", "int(32 * GIB), 8),", (_USABLE_HBM + "[v6e-1]",)),
)
