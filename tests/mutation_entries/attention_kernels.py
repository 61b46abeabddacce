"""Planted bugs in attention, its masks, positions and kernels."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
