#!/usr/bin/env bash
# The GPU check (`make gpu-check`): on one CUDA GPU, in at most 8 minutes, every check that needs a GPU.
#
#   scripts/gpu_check.sh [--dry-run]
#
#   1 kernel-tests    pytest -m gpu: the compiled Triton kernels against the CPU reference
#   2 kernels-bench   python -m kernels.bench            -> benchmarks/results/decode-<gpu>.json
#   3 cuda-ctest      CUDA build of the C/C++ library (build-gpu/) and its ctest test_cuda
#   4 extract-vits14  benchmarks/extract.py, 896 px, bf16, random weights -> benchmarks/results/extract-teacher-*.json
#   5 extract-vitl14  the same for vitl14_reg4
#
# Each step has its own timeout (the sum fits the 8 minutes); a failed or timed-out step does not stop the others.
# The summary (each step's command, exit status, seconds, last lines of output; git SHA, machine, load average) goes
# to benchmarks/results/gpu-check-<gpu>.json and the exit status is non-zero if any step failed. Without a CUDA GPU
# (or with --dry-run) it prints what it would run and exits 0, writing nothing. Python: $TARDIS_PYTHON, else
# .venv/bin/python, else python3. CUDA architectures for the C++ build: $TARDIS_CUDA_ARCHITECTURES (default native).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (use --dry-run)" >&2; exit 2 ;;
  esac
done

python=${TARDIS_PYTHON:-}
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=$(command -v python3); fi
fi
results="$root/benchmarks/results"
build="$root/build-gpu"
arch=${TARDIS_CUDA_ARCHITECTURES:-native}
jobs=${TARDIS_BUILD_JOBS:-$(nproc)}

# name | timeout (s) | command. Timeouts add up to 470 s of the 480 s budget.
steps=(
  "kernel-tests|60|$python -m pytest -q -p no:cacheprovider -m gpu tests"
  "kernels-bench|180|$python -m kernels.bench"
  "cuda-ctest|140|cmake -S $root -B $build -DCMAKE_BUILD_TYPE=Release -DTARDIS_WITH_CUDA=ON -DTARDIS_WITH_TENSORRT=OFF -DTARDIS_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_ARCHITECTURES=$arch -DTARDIS_PYTHON=$python && cmake --build $build -j $jobs --target test_cuda && cd $build && ctest --output-on-failure -R '^test_cuda\$' --no-tests=error"
  "extract-vits14|40|$python $root/benchmarks/extract.py --mode teacher --device cuda --resolution 896 --dtype bfloat16 --variant vits14"
  "extract-vitl14_reg4|50|$python $root/benchmarks/extract.py --mode teacher --device cuda --resolution 896 --dtype bfloat16 --variant vitl14_reg4"
)

gpu=$("$python" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
if [[ -z "$gpu" || $dry_run == 1 ]]; then
  if [[ -z "$gpu" ]]; then
    echo "gpu_check.sh: no CUDA GPU visible to $python (torch.cuda.is_available() is False): nothing run."
  fi
  echo "On one CUDA GPU it runs, in this order (timeout per step), from $root:"
  for step in "${steps[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    printf '  %-20s %4ss  %s\n' "$name" "$limit" "$command"
  done
  echo "and writes the results and the summary (gpu-check-<gpu>.json) under $results."
  exit 0
fi

echo "gpu_check.sh: on $gpu"
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
summary="$log_dir/steps.tsv"
: >"$summary"
failed=0
cd "$root"
for step in "${steps[@]}"; do
  IFS='|' read -r name limit command <<<"$step"
  echo "== $name (timeout ${limit}s): $command"
  start=$(date +%s%N)
  timeout --kill-after=10 "$limit" bash -c "$command" 2>&1 | tee "$log_dir/$name.log"
  status=${PIPESTATUS[0]}
  milliseconds=$((($(date +%s%N) - start) / 1000000))
  ((status != 0)) && failed=1
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$limit" "$status" "$milliseconds" "$command" >>"$summary"
done

TARDIS_GPU="$gpu" "$python" - "$summary" "$log_dir" "$results" "$*" <<'EOF'
"""Write the summary JSON of the GPU check and print its table."""
import json
import os
import re
import sys
from pathlib import Path

import torch  # noqa: F401  (loaded, so measurement() records torch, CUDA and the GPU)

from tardis_edge.io import atomic_write_text
from tardis_edge.provenance import measurement

summary, log_dir, results, args = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
gpu = os.environ["TARDIS_GPU"]
steps = []
for line in summary.read_text().splitlines():
    name, limit, status, milliseconds, command = line.split("\t", 4)
    status = int(status)
    tail = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
    steps.append({
        "step": name,
        "command": command,
        "timeout_s": int(limit),
        "exit_status": status,
        "timed_out": status in (124, 137),
        "passed": status == 0,
        "seconds": round(int(milliseconds) / 1000, 1),
        "output_tail": tail,
    })
record = {
    "benchmark": "gpu-check",
    "measured": measurement(f"scripts/gpu_check.sh {args}".strip()),
    "gpu": gpu,
    "passed": all(s["passed"] for s in steps),
    "total_seconds": round(sum(s["seconds"] for s in steps), 1),
    "steps": steps,
}
slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
out = results / f"gpu-check-{slug}.json"
atomic_write_text(out, json.dumps(record, indent=2) + "\n")
print(f"\n{'step':22s} {'status':>7s} {'seconds':>8s}")
for s in steps:
    verdict = "timeout" if s["timed_out"] else ("ok" if s["passed"] else f"exit {s['exit_status']}")
    print(f"{s['step']:22s} {verdict:>7s} {s['seconds']:8.1f}")
print(f"total {record['total_seconds']:.0f} s on {gpu} -> {out}")
EOF
exit $failed
