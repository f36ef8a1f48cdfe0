"""Layers as a directed graph: the import-linter contracts in pyproject.toml hold, importing the runtime loads no
torch, and both checks fail on a copy of the code given one bad import (so a green run means something).

Import-linter reads function-level (lazy) imports too: a lazy ``import training`` in ``export`` breaks the graph as
surely as one at the top of the file.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import importlinter.api as importlinter_api
except ImportError as e:  # a failure, not a skip: an unchecked graph must not pass
    raise ImportError("the layer contracts need import-linter (the dev extra): pip install -e '.[dev]'") from e

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tardis_edge", "training", "export", "kernels")
CONTRACT_IDS = [c["id"] for c in importlinter_api.read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]]
RUNTIME_IMPORTS = (
    "tardis_edge.runtime, tardis_edge.runtime.cli, tardis_edge.runtime.writers, tardis_edge.runtime.video, "
    "tardis_edge.runtime.backends.ort, tardis_edge.runtime.backends.trt"
)


def lint_imports(root: Path, *contract_ids: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` (they shadow the installed ones), the given contracts only."""
    args = [arg for cid in contract_ids for arg in ("--contract", cid)]
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def torch_loaded_by_runtime_import(root: Path) -> subprocess.CompletedProcess:
    """Exit status 1 and the offenders on stdout when importing the runtime loads torch, training or export."""
    code = (
        f"import sys; import {RUNTIME_IMPORTS}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'export')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_contract_holds(contract_id):
    done = lint_imports(ROOT, contract_id)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_the_runtime_loads_no_torch_training_or_export():
    done = torch_loaded_by_runtime_import(ROOT)
    assert done.returncode == 0, f"`import {RUNTIME_IMPORTS}` loaded {done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def code_copy(tmp_path_factory):
    """The four packages' Python files and pyproject.toml, copied; each test below spoils one file of its own copy."""
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def spoil(code_copy: Path, tmp_path: Path, module_file: str, statement: str) -> tuple[Path, int]:
    """A copy of the code whose ``module_file`` gains ``statement`` inside a function (a lazy import) at its end;
    returns the copy's root and the statement's line number."""
    root = tmp_path / "code"
    shutil.copytree(code_copy, root)
    target = root / module_file
    text = target.read_text() + f"\n\ndef _layer_violation():\n    {statement}\n"
    target.write_text(text)
    return root, len(text.splitlines())


@pytest.mark.parametrize(
    ("module_file", "statement", "contract_id"),
    [
        ("export/pipeline.py", "import training.common", "export-no-training"),
        ("tardis_edge/geometry.py", "import training", "tardis-edge-no-upper-layers"),
        ("tardis_edge/geometry.py", "from export import source", "tardis-edge-no-upper-layers"),
        ("tardis_edge/io.py", "import kernels", "tardis-edge-no-upper-layers"),
        ("tardis_edge/runtime/runner.py", "import training.config", "tardis-edge-no-upper-layers"),
        ("tardis_edge/runtime/boxes.py", "from export.pipeline import export_artifact", "tardis-edge-no-upper-layers"),
        ("tardis_edge/runtime/cli.py", "import kernels", "tardis-edge-no-upper-layers"),
        ("tardis_edge/runtime/cli.py", "import torch", "runtime-no-torch"),
        ("tardis_edge/runtime/writers.py", "from tardis_edge.models import build_model", "runtime-no-torch"),
        ("tardis_edge/metrics.py", "from tardis_edge.runtime import boxes", "core-no-runtime"),
        ("training/full.py", "import export.source", "training-no-runtime-no-export"),
        ("kernels/decode.py", "import training", "kernels-core-only"),
    ],
)
def test_contract_breaks_on_a_bad_lazy_import(code_copy, tmp_path, module_file, statement, contract_id):
    root, line = spoil(code_copy, tmp_path, module_file, statement)
    done = lint_imports(root, contract_id)
    assert done.returncode != 0, f"{statement!r} in {module_file} did not break {contract_id}:\n{done.stdout}"
    # the report names the spoiled line itself (some contracts are broken today by other lines of the same module)
    module = module_file.removesuffix(".py").replace("/", ".")
    assert re.search(rf"{re.escape(module)} -> \S+ \([^)]*\bl\.{line}\b", done.stdout), done.stdout + done.stderr


def test_runtime_torch_check_breaks_on_a_torch_import(code_copy, tmp_path):
    root = tmp_path / "code"
    shutil.copytree(code_copy, root)
    video = root / "tardis_edge" / "runtime" / "video.py"
    video.write_text(video.read_text().replace("\nimport numpy as np\n", "\nimport numpy as np\nimport torch\n", 1))
    assert "import torch" in video.read_text()
    assert torch_loaded_by_runtime_import(root).returncode == 1
