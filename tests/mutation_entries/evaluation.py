"""Planted bugs in held-out evaluation: the evaluator, its report and the evaluate command."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
