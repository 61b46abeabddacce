"""Planted bugs in generation and in the weight mapping of imported checkpoints."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
