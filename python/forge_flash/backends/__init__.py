"""Attention backends: the interface, the naive path and the CUDA plugin adapter."""

from .base import Backend, PreparedRun
from .naive import NAIVE, NaiveBackend

__all__ = ["NAIVE", "Backend", "NaiveBackend", "PreparedRun"]
