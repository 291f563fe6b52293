"""How close a result must be to the float64 reference, per dtype."""

from __future__ import annotations

import torch

# Output tolerance: the rounding of the result to the input dtype dominates (half an ulp is
# 2**-11 relative for float16, 2**-8 for bfloat16), plus float32 accumulation.
OUT_TOLERANCE = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (8e-3, 1.6e-2),
}
# The LSE is float32 whatever the input dtype, computed from the same (rounded) inputs.
LSE_TOLERANCE = (1e-4, 2e-5)


def assert_close_to_reference(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "out"
) -> None:
    atol, rtol = OUT_TOLERANCE[dtype]
    _assert_within(actual, expected, atol, rtol, what)


def assert_lse_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float32, f"lse must be float32, got {actual.dtype}"
    atol, rtol = LSE_TOLERANCE
    actual64 = actual.double().cpu()
    # -inf must match exactly (rows that see no key); compare the finite part numerically.
    assert torch.equal(torch.isneginf(actual64), torch.isneginf(expected)), "lse -inf rows differ"
    finite = torch.isfinite(expected)
    _assert_within(actual64[finite], expected[finite], atol, rtol, "lse")


def _assert_within(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str
) -> None:
    actual64 = actual.double().cpu()
    assert actual64.shape == expected.shape, f"{what} shape {actual64.shape} != {expected.shape}"
    assert torch.isfinite(actual64).all(), f"{what} has non-finite values"
    if actual64.numel() == 0:
        return
    excess = (actual64 - expected).abs() - (atol + rtol * expected.abs())
    worst = excess.max().item()
    assert worst <= 0, (
        f"{what} differs from the float64 reference by up to "
        f"{(actual64 - expected).abs().max().item():.3g} (tolerance atol={atol}, rtol={rtol})"
    )
