"""Planted bugs in reading corpora: text files, documents, TFDS, and the prepare command."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = (
)
