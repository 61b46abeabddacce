"""Planted bugs in training_core (mutation hunt of session 13)."""
from mutation_entries import Mutation  # noqa: F401  (the entries below use it)

ENTRIES = (
)
