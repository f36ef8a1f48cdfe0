"""Provenance: the versions, git SHA and machine state saved beside every checkpoint, artifact and benchmark result.

Imports no torch: torch's version (and CUDA's, the GPU's) is reported when this process has already loaded torch
(training, export, the benchmarks do; the edge runtime never does).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tardis_edge.machine import cpu_name

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_sha() -> str:
    """``HEAD``'s SHA of the source tree, ``-dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        return sha + ("-dirty" if dirty.stdout.strip() else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of this environment (package, Python, numpy, OpenCV, platform, and torch, CUDA and the GPU when torch
    is loaded) and the git SHA."""
    import numpy

    import tardis_edge

    out = {
        "tardis_edge": tardis_edge.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "git_sha": git_sha(),
    }
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(torch.__version__)  # a TorchVersion: str() keeps the checkpoint weights_only-safe
        if torch.cuda.is_available():
            out["cuda"] = str(torch.version.cuda)
            out["gpu"] = torch.cuda.get_device_name(0)
    return out


RUNTIME_PROBE = """
import importlib.util, json, platform, onnxruntime
print(json.dumps({"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                  "torch_installed": importlib.util.find_spec("torch") is not None}))
"""


def runtime_environment(python: str) -> dict[str, Any]:
    """What a runtime benchmark's child interpreter has: its Python and ONNX Runtime versions, and whether torch is
    installed there at all (the edge runtime's figures come from an environment without it)."""
    probe = subprocess.run([python, "-c", RUNTIME_PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise RuntimeError(f"{python} cannot import the runtime's onnxruntime: {probe.stderr.strip()[-500:]}")
    return {"interpreter": python, **json.loads(probe.stdout)}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): how busy the machine was."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def measurement(command: Sequence[str] | str) -> dict[str, Any]:
    """What every file in ``benchmarks/results/`` records about how it was made.

    Args:
        command: the command line that produced the result (``sys.argv`` of the script, or a string).
    """
    return {
        "command": command if isinstance(command, str) else " ".join(command),
        "git_sha": git_sha(),
        "machine": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1_5_15min": load_average(),
        "versions": versions(),
    }
