"""Torch-free accuracy of an exported model: ``tardis-edge eval`` per setting (precision, decode, flip test), beside
the training run's own test evaluation, into benchmarks/results/runtime-openfield-eval-cpu.json.

    python benchmarks/runtime_eval_openfield.py runs/openfield/export --run runs/openfield
    python benchmarks/runtime_eval_openfield.py ARTIFACT --data PROJECT --settings fp32-graph --out x.json

Each setting runs ``python -m tardis_edge.runtime eval ARTIFACT --data DATA --split test --out TMP ...`` as a child
process (``--python`` chooses the interpreter: the committed figures come from a virtualenv with the runtime extra
only, no torch) on the test part of the split training recorded (the artifact's ``split.json``). The record holds the
command, git SHA, machine and load average (``tardis_edge.provenance.measurement``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import measurement, runtime_environment  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "openfield-Pranav-2018-10-30"
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = {  # name: (description, tardis-edge eval options)
    "fp32-numpy-flip": (
        "fp32, NumPy decode, flip test (the run's evaluation setting)",
        ["--decode", "numpy", "--flip-test"],
    ),
    "fp32-graph": ("fp32, decode in the graph, no flip test", []),
    "fp16-graph": ("fp16, decode in the graph, no flip test", ["--precision", "fp16"]),
    "int8-graph": (
        "int8 (the CPU graph, tardis_int8_cpu.onnx), decode in the graph, no flip test",
        ["--precision", "int8"],
    ),
}
HEADLINE = ("num_samples", "rmse_px", "mean_px", "median_px", "PCK@0.05", "PCK@0.1", "AP")


def run_eval(python: str, artifact: Path, data: Path, split: str, options: list[str], out: Path) -> dict:
    """One ``tardis-edge eval`` child process: its metrics JSON and the command."""
    command = [python, "-m", "tardis_edge.runtime", "eval", str(artifact), "--data", str(data), "--split", split]
    command += [*options, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    metrics = json.loads(out.read_text())
    return {"command": " ".join(command), **{k: metrics[k] for k in HEADLINE if k in metrics}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact folder written by tardis-export (holds split.json)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"labelled data (default: {DATA.name})")
    parser.add_argument("--split", default="test", help="part of the recorded split (default test)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--run", type=Path, help="the training run: its metrics_test.json is quoted beside")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the runtime's environment")
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime-openfield-eval-cpu.json")
    args = parser.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    command = ["python", "benchmarks/runtime_eval_openfield.py", *(sys.argv[1:] if argv is None else argv)]
    runtime_eval = {}
    with tempfile.TemporaryDirectory(prefix="runtime-eval-") as tmp:
        for name in names:
            description, options = SETTINGS[name]
            result = run_eval(args.python, args.artifact, args.data, args.split, options, Path(tmp) / f"{name}.json")
            runtime_eval[description] = result
            print(f"{description}: RMSE {result['rmse_px']:.3f} px on {result['num_samples']} samples")
    record = {
        "benchmark": f"tardis-edge eval of {args.artifact} on {args.data} [{args.split}], detector-free two passes",
        "measured": measurement(command),
        "artifact": str(args.artifact),
        "runtime_environment": runtime_environment(args.python),
        "runtime_eval": runtime_eval,
    }
    if args.run is not None:
        metrics = json.loads((args.run / "metrics_test.json").read_text())
        record["training_evaluation"] = {
            "source": str(args.run / "metrics_test.json"),
            **{k: metrics[k] for k in HEADLINE if k in metrics},
        }
    atomic_write_text(args.out, strict_json(record) + "\n")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
