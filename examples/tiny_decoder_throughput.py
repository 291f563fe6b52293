"""Tokens per second of the tiny decoder: the kernel path beside the naive path.

    python examples/tiny_decoder_throughput.py [--batch 4] [--prompt-len 1024] [--new-tokens 64]

Runs forge_flash.models.TinyDecoder (random weights, attention through forge-flash's
routing) on the GPU when there is one: a batched prefill (multi_head_attention), then greedy
batched decode (batched_decode_attention), once with FORGE_FLASH_BACKEND=cuda and once with
FORGE_FLASH_BACKEND=naive, plus decode replayed from a CUDA graph. On a machine without the
kernels only the naive path runs, and the script says why.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import forge_flash as ff
from forge_flash import discovery
from forge_flash.models import GraphedDecodeStep, TinyDecoder, TinyDecoderConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _use_backend(name: str) -> None:
    os.environ[discovery.BACKEND_ENV] = name
    discovery.reset()
    ff.active_backend()  # fail here, not in the middle of a timing


def _measure(model: TinyDecoder, args, graph: bool) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) for one backend, after one untimed warm-up run."""
    device = model.device
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.prompt_len)
    prompts = torch.randint(0, model.config.vocab_size, shape, generator=gen).to(device)
    max_len = args.prompt_len + args.new_tokens
    rates = (0.0, 0.0)
    for _ in range(2):  # the first round warms up (kernels, allocator, graph capture)
        cache = model.new_cache(args.batch, max_len)
        step = GraphedDecodeStep(model, cache) if graph else model.decode
        _sync(device)
        start = time.perf_counter()
        tokens = model.prefill(prompts, cache)[:, -1].argmax(-1)
        _sync(device)
        prefilled = time.perf_counter()
        for _ in range(args.new_tokens):
            tokens = step(tokens, cache).argmax(-1)
        _sync(device)
        done = time.perf_counter()
        rates = (
            args.batch * args.prompt_len / (prefilled - start),
            args.batch * args.new_tokens / (done - prefilled),
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--attn-dtype", choices=["float16", "bfloat16"], default="float16",
        help="attention and KV-cache dtype (the kernels take half precision)",
    )  # fmt: skip
    args = parser.parse_args()

    cuda_status = discovery.backend_info().backends["cuda"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TinyDecoderConfig(max_positions=args.prompt_len + args.new_tokens)
    model = TinyDecoder(config, attn_dtype=getattr(torch, args.attn_dtype)).to(device)
    print(
        f"TinyDecoder: {config.num_layers} layers, {config.num_heads} heads / "
        f"{config.num_kv_heads} KV heads of {config.head_dim}, attention {args.attn_dtype}; "
        f"batch {args.batch}, prompts of {args.prompt_len}, {args.new_tokens} new tokens, "
        f"on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'the CPU'}"
    )
    runs = []
    if cuda_status.available and device.type == "cuda":
        runs += [("kernels", "cuda", False), ("kernels + CUDA graph", "cuda", True)]
    else:
        print(f"kernel path unavailable: {cuda_status.reason}")
    runs.append(("naive", "naive", False))
    if device.type == "cuda":
        runs.append(("naive + CUDA graph", "naive", True))

    previous = os.environ.get(discovery.BACKEND_ENV)
    print(f"\n{'path':<22} {'prefill tok/s':>14} {'decode tok/s':>14}")
    try:
        for label, backend, graph in runs:
            _use_backend(backend)
            prefill_rate, decode_rate = _measure(model, args, graph)
            print(f"{label:<22} {prefill_rate:>14,.0f} {decode_rate:>14,.0f}")
    finally:
        if previous is None:
            os.environ.pop(discovery.BACKEND_ENV, None)
        else:
            os.environ[discovery.BACKEND_ENV] = previous
        discovery.reset()


if __name__ == "__main__":
    main()
