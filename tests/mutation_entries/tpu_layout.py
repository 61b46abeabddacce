"""Planted bugs in TPU slices, device meshes, host feeding and the ahead-of-time compile."""
from mutation_entries import Mutation

ENTRIES: tuple[Mutation, ...] = ()
