"""Planted bugs in how Part A / Part B rows are built: spans, masking, the pipeline's batches."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = (
)
