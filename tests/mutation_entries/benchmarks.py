"""Planted bugs in the benchmarks, the embedded corpus and the convert command."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
