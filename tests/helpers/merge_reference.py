"""A float64 reference for merging partial attention states, written from the definition
(not from forge_flash.merge): lse = logsumexp of the parts' LSEs, out = sum of
exp(lse_i - lse) * out_i over the parts that saw a key (LSE > -inf)."""

from __future__ import annotations

import torch


def reference_merge(
    outs: list[torch.Tensor], lses: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """outs (batch, seqlen, heads, d), lses (batch, heads, seqlen) -> float64 (out, lse)."""
    lse = torch.logsumexp(torch.stack([x.double() for x in lses]), dim=0)
    out = torch.zeros(outs[0].shape, dtype=torch.float64, device=outs[0].device)
    for part, part_lse in zip(outs, lses, strict=True):
        part_lse = part_lse.double()
        seen = ~torch.isneginf(part_lse)
        # exp(lse_i - lse) per row; rows where every part is empty keep out 0.
        weight = torch.where(seen, torch.exp(part_lse - lse), torch.zeros_like(part_lse))
        weight = weight.permute(0, 2, 1).unsqueeze(-1)
        term = weight * part.double()
        out += torch.where(seen.permute(0, 2, 1).unsqueeze(-1), term, torch.zeros_like(term))
    return out, lse
