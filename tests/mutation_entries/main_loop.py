"""Planted bugs in the training command's main loop, its inputs, the optimizer and evaluation."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
