#!/usr/bin/env bash
# Session 79's item 2 (carry .gpu/wK .gpu/wN .gpu/run): what a K/V tile's traffic costs the long
# rows. Nsight Compute on main (M, = .gpu/wK: main's kernels since 9c6a15f) and session 77's probe
# N (no K/V loads after the first ring, wrong answers) at head_dim 128 over 16k non-causal: shared
# memory, L1/L2 and tensor-pipe throughput, warp states. Prints the metrics side by side.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for b in K N; do bash tools/lab/wheel_venv.sh /tmp/v$b .gpu/w$b || exit 1; done
for b in K N; do
  timeout 150 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy \
    -o $out/prof-$b /tmp/v$b/bin/python tools/lab/profile_rows.py --prefill 128:16384 > $out/ncu-$b.log 2>&1
  ncu -i $out/prof-$b.ncu-rep --page details --csv > $out/details-$b.csv 2>/dev/null
done
python3 - "$out" <<'PY'
import csv, sys
out = sys.argv[1]
keep = ("Duration", "Compute (SM) Throughput", "Memory Throughput", "L1/TEX Cache Throughput",
        "L2 Cache Throughput", "DRAM Throughput", "Shared Memory", "Bank Conflicts", "Mem Busy",
        "Max Bandwidth", "L2 Hit Rate", "Issue Slots Busy", "Warp Cycles Per Issued", "Registers Per")
table = {}
for b in "KN":
    try:
        for r in csv.DictReader(open(f"{out}/details-{b}.csv")):
            name = r["Kernel Name"][:28]
            if not any(k in r["Metric Name"] for k in keep):
                continue
            table.setdefault((r["ID"], name, r["Metric Name"], r["Metric Unit"]), {})[b] = r["Metric Value"]
    except (OSError, KeyError) as e:
        print(b, "no details:", e)
for (i, name, metric, unit), v in table.items():
    print(f"{i:>2s} {name:28s} {metric[:40]:40s} {unit[:8]:8s} M {v.get('K', '-'):>10s}  N {v.get('N', '-'):>10s}")
PY
