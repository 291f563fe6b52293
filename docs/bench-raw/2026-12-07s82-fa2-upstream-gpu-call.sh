#!/usr/bin/env bash
# Session 82's run of FlashAttention-2's own forward tests: session 81's call script on main's
# wheels (.gpu/wM instead of .gpu/wK) and seed 85; as run: WORKERS=4 KEEP=0.004 FA2_TIMEOUT=200.
# Carry .gpu/wM .gpu/fa2 .gpu/run.
sed 's#\.gpu/wK#.gpu/wM#g' docs/bench-raw/2026-12-07s81-fa2-upstream-gpu-call.sh | SEED=${SEED:-85} bash
