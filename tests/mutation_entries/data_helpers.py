"""Planted bugs in documents, sentences, masking, checksums and the workdir's helpers."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
