"""The C API's own checks, reached through the binding with raw pointers: it must refuse
what the Python layer would never pass, with a message naming the argument."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.kernels import rand_qkv


def _call(*tensors, **overrides):
    from forge_flash.discovery import plugin_binding

    _C = plugin_binding()  # forge_flash_cu13._C or forge_flash_cu12._C, the one in use

    q, k, v, out = tensors
    strides = []
    for t in (q, k, v, out):
        strides += [t.stride(0), t.stride(1), t.stride(2)]
    b, sq, h, d = q.shape
    args = dict(
        q=q.data_ptr(),
        k=k.data_ptr(),
        v=v.data_ptr(),
        out=out.data_ptr(),
        lse=0,
        seqused_k=0,
        strides=strides,
        batch=b,
        seqlen_q=sq,
        seqlen_k=k.shape[1],
        num_heads=h,
        num_heads_k=k.shape[2],
        head_dim=d,
        softmax_scale=1 / math.sqrt(d),
        causal=False,
        dtype=0 if q.dtype == torch.float16 else 1,
        workspace=0,
        workspace_bytes=0,
        device=q.device.index,
        stream=torch.cuda.current_stream().cuda_stream,
    )
    args.update(overrides)
    static = ("strides", "batch", "seqlen_q", "seqlen_k", "num_heads", "num_heads_k",
              "head_dim", "softmax_scale", "causal", "dtype")  # fmt: skip
    options = args.pop("options", (-1, -1, 0.0, 0, 0, 0, 0, 0, b, False, 0))
    call = _C.FwdCall(*(args.pop(name) for name in static), options)
    return call(*args.values())  # q, k, v, out, lse, seqused_k, workspace, ..., stream


@pytest.fixture
def tensors():
    q, k, v = rand_qkv(2, 64, 64, 4, 2, 64, torch.float16)
    return q, k, v, torch.empty_like(q)


@pytest.mark.parametrize(
    "override,message",
    [
        (dict(head_dim=12), "head_dim"),
        (dict(head_dim=264), "head_dim"),
        (dict(num_heads_k=3), "num_heads_k"),
        (dict(num_heads=0), "num_heads"),
        (dict(batch=-1), "batch_size"),
        (dict(seqlen_k=-5), "seqlen_k"),
        (dict(softmax_scale=float("nan")), "softmax_scale"),
        (dict(softmax_scale=float("inf")), "softmax_scale"),
        (dict(q=0), "q.data"),
        (dict(lse=6), "softmax_lse"),
        (dict(options=(-2, 0, 0.0, 0, 0, 0, 0, 0, 2, False, 0)), "window"),
        (dict(options=(-1, -1, -3.0, 0, 0, 0, 0, 0, 2, False, 0)), "softcap"),
        (dict(options=(-1, -1, 0.0, 0, 0, 0, 0, 0, 2, False, -1)), "num_splits"),
    ],
)
def test_invalid_arguments_are_refused(tensors, override, message):
    with pytest.raises(ValueError, match=message):
        _call(*tensors, **override)


def test_misaligned_pointer_and_stride(tensors):
    q, k, v, out = tensors
    with pytest.raises(ValueError, match="16-byte aligned"):
        _call(q, k, v, out, q=q.data_ptr() + 2)
    bad = [q.stride(0), q.stride(1), 12] + [0] * 9
    with pytest.raises(ValueError, match="multiple of 8"):
        _call(q, k, v, out, strides=bad)


def test_overlapping_output_is_refused(tensors):
    q, k, v, out = tensors
    strides = []
    for t in (q, k, v):
        strides += [t.stride(0), t.stride(1), t.stride(2)]
    strides += [out.stride(0), 0, out.stride(2)]  # every token writes the same row
    with pytest.raises(ValueError, match="overlap"):
        _call(q, k, v, out, strides=strides)


def test_bad_dtype_code(tensors):
    with pytest.raises(ValueError, match="dtype"):
        _call(*tensors, dtype=7)


def test_workspace_protocol():
    q, k, v = rand_qkv(1, 1, 131072, 32, 8, 128, torch.bfloat16)  # split, combine kernel
    out = torch.full_like(q, float("nan"))
    need = _call(q, k, v, out)
    assert need > 0
    assert torch.isnan(out).all(), "nothing may be launched while workspace is missing"
    with pytest.raises(ValueError, match="256-byte aligned"):
        ws = torch.empty(need + 256, dtype=torch.uint8, device="cuda")
        _call(q, k, v, out, workspace=ws.data_ptr() + 4, workspace_bytes=need)
    ws = torch.empty(need, dtype=torch.uint8, device="cuda")
    assert _call(q, k, v, out, workspace=ws.data_ptr(), workspace_bytes=need) == 0
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


def test_current_device_is_left_alone(tensors):
    before = torch.cuda.current_device()
    _call(*tensors)
    assert torch.cuda.current_device() == before


def test_empty_problems_launch_nothing():
    q, k, v = rand_qkv(2, 0, 10, 4, 4, 64, torch.float16)
    out = torch.empty_like(q)
    assert _call(q, k, v, out) == 0
