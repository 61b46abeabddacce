"""Planted bugs in using a trained or imported model: cloze scoring, pretrained loading, the
model config's derived sizes."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
