"""scripts/gpu_check.sh (`make gpu-check`) without a GPU: it says what it would run, within the 8-minute budget, writes
nothing and exits 0. (On a GPU it runs those steps; see the script.)"""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_without_a_gpu_it_lists_the_steps_and_exits_0():
    before = sorted(RESULTS.iterdir())
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA GPU visible" in done.stdout and "nothing run" in done.stdout
    steps = re.findall(r"^  (\S+)\s+(\d+)s  (.+)$", done.stdout, flags=re.M)
    commands = {name: command for name, _, command in steps}
    assert list(commands) == ["kernel-tests", "kernels-bench", "cuda-ctest", "extract-vits14", "extract-vitl14_reg4"]
    assert "-m pytest" in commands["kernel-tests"] and "-m gpu" in commands["kernel-tests"]
    assert "-m kernels.bench" in commands["kernels-bench"]
    assert "-DTARDIS_WITH_CUDA=ON" in commands["cuda-ctest"] and "ctest" in commands["cuda-ctest"]
    for variant in ("vits14", "vitl14_reg4"):
        command = commands[f"extract-{variant}"]
        wanted = ("--device cuda", "--resolution 896", "--dtype bfloat16", f"--variant {variant}")
        assert all(argument in command for argument in wanted), command
    assert sum(int(limit) for _, limit, _ in steps) <= 8 * 60
    assert sorted(RESULTS.iterdir()) == before, "the no-GPU path wrote results"
