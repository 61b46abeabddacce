"""Planted bugs in what a run records and measures: logs, checksums, prefetching, bench, fit."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = (
)
