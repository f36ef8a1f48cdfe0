"""The C/C++ embedding library (CMakeLists.txt, cpp/): configure, build and run its ctest suite from pytest.

Slow (a fresh CMake build takes minutes on 2 cores), so CI runs it through ``scripts/build_cpp.sh`` instead and this
test is for ``pytest -m slow``. CUDA is left out here to keep the build short; the ctest tests themselves compare the
C++ decoding, pre-processing and OpenCV-DNN runner with the golden data and the Python pipeline, and the
multi-animal parts (finder decode, duplicates, the assignment, the tracker, ``tardis_multi``) with the Python
runtime.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpp_library_builds_and_passes_ctest(tmp_path: Path) -> None:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("cmake and a C++ compiler are needed (apt-get install cmake g++ libopencv-dev)")
    build = tmp_path / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DTARDIS_WITH_CUDA=OFF",
            "-DTARDIS_WERROR=ON",
            f"-DTARDIS_PYTHON={sys.executable}",
            f"-DTARDIS_TEST_DATA_DIR={ROOT / 'tests' / 'fixtures'}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True, text=True)
    result = subprocess.run(
        ["ctest", "--output-on-failure", "-j", "2"], cwd=build, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "100% tests passed" in result.stdout
    for test in ("test_decode", "test_preprocess", "test_multi_units", "test_assignment", "test_tracking"):
        assert test in result.stdout, f"ctest did not run {test}"
