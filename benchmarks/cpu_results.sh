#!/usr/bin/env bash
# Regenerate every CPU results file in benchmarks/results/ from the openfield runs, one benchmark at a time (each
# script records its command, git SHA, machine and load average). Needs the trained runs and their exports:
#   python -m training.full benchmarks/configs/openfield.yaml --out=runs/openfield
#   python -m training.full benchmarks/configs/openfield.yaml --out=runs/openfield-nostage1 --skip_distill=true
#   python benchmarks/openfield_report.py runs/openfield runs/openfield-nostage1
# and a torch-free environment for the runtime figures: RUNTIME_PYTHON=/path/to/venv/bin/python (pip install
# ".[runtime]"; default: this interpreter, which then is not torch-free).
#   bash benchmarks/cpu_results.sh [step ...]     steps: export export-nostage1 int8 runtime eval bench paths students extract
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RT=${RUNTIME_PYTHON:-$PY}
DATA=../shared/data/openfield-Pranav-2018-10-30
VIDEO=$DATA/videos/m3v1mp4.mp4
R=benchmarks/results
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(export export-nostage1 int8 runtime eval bench paths students extract)
for step in "${steps[@]}"; do
  echo "== $step ($(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  case $step in
    export) $PY -m export.cli runs/openfield --fp16 --int8 --calib $DATA --report $R/export-openfield.json ;;
    export-nostage1)
      $PY -m export.cli runs/openfield-nostage1 --fp16 --int8 --calib $DATA --report $R/export-openfield-nostage1.json ;;
    int8) $PY benchmarks/int8_openfield.py runs/openfield/export --wait-load 1.5 ;;
    runtime) $PY benchmarks/runtime_openfield.py runs/openfield/export --python "$RT" ;;
    eval) $PY benchmarks/runtime_eval_openfield.py runs/openfield/export --run runs/openfield --python "$RT" ;;
    bench)
      $RT -m tardis_edge.runtime.cli bench runs/openfield/export --precisions fp32,fp16,int8 --batch-sizes 1,8 \
        --iterations 40 --warmup 5 --out $R/runtime-openfield-resnet18-128-cpu.json ;;
    paths) $PY benchmarks/predict_paths_openfield.py runs/openfield ;;
    students) $PY benchmarks/students.py --out $R/students-cpu.json ;;
    extract)
      $PY benchmarks/extract.py --mode teacher --variant vits14 --resolution 224 --batch-size 8 --warmup 1 --repeats 5 \
        --device cpu --out $R/extract-teacher-vits14-224-float32-cpu.json
      $PY benchmarks/extract.py --mode pipeline --variant vits14 --resolution 224 --batch-size 8 --frames 32 --video $VIDEO \
        --device cpu --out $R/extract-pipeline-vits14-224-float32-cpu.json
      $PY benchmarks/extract.py --mode pipeline --variant vits14 --resolution 448 --batch-size 4 --frames 16 --video $VIDEO \
        --device cpu --out $R/extract-pipeline-vits14-448-float32-cpu.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
