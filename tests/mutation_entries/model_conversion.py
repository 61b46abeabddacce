"""Planted bugs in the model's configuration, attention, positions and checkpoint conversion."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = (
)
