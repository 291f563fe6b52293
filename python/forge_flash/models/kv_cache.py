"""A static KV cache: preallocated buffers and per-sequence fill levels on the device.

Static buffers and device-side lengths are what make a decode step capturable in a CUDA
graph: the step writes the new token's K/V at ``lengths[b]`` and advances ``lengths`` in place,
so a replay needs no host value. ``host_lengths`` mirrors the lengths in Python for the
single-sequence path, which slices the cache to a length known on the host; it is ``None``
once a step advances the lengths on the device only (batched decode, a CUDA graph replay).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer: ``k[layer]`` is (batch, max_len, num_kv_heads, head_dim)."""

    def __init__(
        self,
        num_layers: int,
        batch: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (num_layers, batch, max_len, num_kv_heads, head_dim)
        # Zeros, not empty: slots past a sequence's length are never read, but a cache that
        # holds no garbage makes a wrong read show up as a wrong number rather than a NaN.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.int32, device=device)
        self.host_lengths: list[int] | None = [0] * batch

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def host_length(self, row: int) -> int:
        """Row ``row``'s fill level as known on the host (no device read)."""
        if self.host_lengths is None:
            raise RuntimeError(
                "the cache lengths are only known on the device (a batched decode step or a "
                "CUDA graph replay advanced them); decode with device_lengths=True"
            )
        return self.host_lengths[row]
