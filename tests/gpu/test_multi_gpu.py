"""Issue 6: kernels run on the tensors' device, whatever device is current (needs 2 GPUs)."""

from __future__ import annotations

import threading

import pytest
import torch

import forge_flash

from helpers.kernels import (
    assert_close_to_reference,
    kernel_backend,
    reference_attention,
    torch_attention,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs"
)


def _qkv(device, sq=1, sk=8192, b=2):
    g = torch.Generator(device="cpu").manual_seed(7)
    shapes = [(b, sq, 32, 128), (b, sk, 8, 128), (b, sk, 8, 128)]
    return [torch.randn(s, generator=g).to(device=device, dtype=torch.bfloat16) for s in shapes]


@pytest.mark.parametrize("sq", [1, 300])  # split-KV decode and a prefill-shaped call
def test_tensors_on_the_non_current_device(sq):
    q, k, v = _qkv("cuda:1", sq=sq)
    with torch.cuda.device(0), kernel_backend():
        got = forge_flash.flash_attn_fwd(q, k, v, causal=True)
        assert torch.cuda.current_device() == 0
    assert got.device == torch.device("cuda:1")
    ref, _ = reference_attention(q, k, v, causal=True)
    assert_close_to_reference(got, ref, torch_attention(q, k, v, causal=True))


def test_varlen_and_batched_decode_on_the_non_current_device():
    dev = torch.device("cuda:1")
    q = torch.randn(7, 8, 64, device=dev, dtype=torch.float16)
    k = torch.randn(50, 2, 64, device=dev, dtype=torch.float16)
    v = torch.randn_like(k)
    cu_q = torch.tensor([0, 3, 7], dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0, 20, 50], dtype=torch.int32, device=dev)
    with torch.cuda.device(0), kernel_backend():
        got = forge_flash.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 4, 30, causal=True)
    for i in range(2):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        one = [x[s].unsqueeze(0) for x, s in ((q, qs), (k, ks), (v, ks))]
        ref, _ = reference_attention(*one, causal=True)
        assert_close_to_reference(got[qs].unsqueeze(0), ref, torch_attention(*one, causal=True))

    kc = torch.randn(3, 500, 2, 64, device=dev, dtype=torch.float16)
    vc = torch.randn_like(kc)
    qd = torch.randn(3, 8, 64, device=dev, dtype=torch.float16)
    lens = torch.tensor([500, 1, 250], dtype=torch.int32, device=dev)
    with torch.cuda.device(0), kernel_backend():
        got = forge_flash.batched_decode_attention(qd, kc, vc, lens)
    for i, n in enumerate(lens.tolist()):
        one = (qd[i : i + 1, None], kc[i : i + 1, :n], vc[i : i + 1, :n])
        ref, _ = reference_attention(*one, causal=False)
        assert_close_to_reference(got[i : i + 1, None], ref, torch_attention(*one, causal=False))


def test_mixed_devices_are_refused():
    q, _, _ = _qkv("cuda:0")
    _, k, v = _qkv("cuda:1")
    with pytest.raises(ValueError, match="device"):
        forge_flash.flash_attn_fwd(q, k, v)


def test_two_threads_two_gpus_concurrently():
    results, errors = {}, []

    def work(dev):
        try:
            torch.cuda.set_device(dev)
            stream = torch.cuda.Stream(device=dev)
            q, k, v = _qkv(f"cuda:{dev}", sq=64, sk=4096, b=4)
            with torch.cuda.stream(stream):
                for _ in range(20):
                    out = forge_flash.flash_attn_fwd(q, k, v, causal=True)
            stream.synchronize()
            ref, _ = reference_attention(q, k, v, causal=True)
            results[dev] = (out, ref, torch_attention(q, k, v, causal=True))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in (0, 1)]
    with kernel_backend():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for out, ref, theirs in results.values():
        assert_close_to_reference(out, ref, theirs)
