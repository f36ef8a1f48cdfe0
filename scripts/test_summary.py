"""The end of ``make test``: one summary of what ran, what did not run, and why.

    python scripts/test_summary.py REPORT_DIR [--pytest-exit N]

Reads what ``make test`` left in REPORT_DIR:
    pytest.xml                   pytest's JUnit report (skip reasons);
    pytest-deselected.json       tests left out by the default markers (tests/conftest.py writes it);
    <build>-configure.log        CMake's configure output: the "tardis-edge: ...: NOT built/registered (...)" lines;
    <build>-ctest.xml            ctest's JUnit report;
    cpp-not-built.txt            why scripts/build_cpp.sh built nothing (no cmake / C++ compiler).
It prints the summary and always exits 0: ``make test``'s exit status stays that of pytest and ctest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

FULL_DATA_SKIP = "needs the full data"  # tests/conftest.py's skip message when ../shared is missing
NOT_BUILT = re.compile(r"tardis-edge: (.*): NOT (?:built|registered) \((.*)\)$")
MARKER_HOW = {"slow": "make test-slow", "gpu": "make test-gpu", "trt": "pytest -m trt"}


def junit_cases(path: Path) -> list[tuple[str, str, str]]:
    """``(name, outcome, message)`` per test case of a JUnit file; outcome is passed, failed or skipped."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "")
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "") or (child.text or "")
        cases.append((f"{case.get('classname', '')}::{case.get('name', '')}", outcome, message))
    return cases


def cuda_gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


def tensorrt_present() -> bool:
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None  # the tensorrt-stubs package is a namespace (no origin)


def skip_reason(message: str) -> str:
    """A skip message without its test-specific path, so equal reasons are counted together."""
    if message.startswith(FULL_DATA_SKIP):
        return "the full data in ../shared is missing (set TARDIS_SHARED_DIR or place shared/ beside the project)"
    return message.split("\n")[0].removeprefix("Skipped: ")


def pytest_lines(report: Path, exit_code: int | None) -> list[str]:
    xml = report / "pytest.xml"
    if not xml.is_file():
        return [f"pytest: no report (exit status {exit_code}): it did not run to the end"]
    cases = junit_cases(xml)
    outcomes = Counter(outcome for _, outcome, _ in cases)
    ran = outcomes["passed"] + outcomes["failed"]
    share = 100.0 * ran / len(cases) if cases else 0.0
    lines = [
        f"pytest: {outcomes['passed']} passed, {outcomes['failed']} failed, {outcomes['skipped']} skipped "
        f"of {len(cases)} selected ({share:.1f} % ran)"
    ]
    lines += [f"  FAILED: {name}" for name, outcome, _ in cases if outcome == "failed"]
    skipped = [(skip_reason(message), name) for name, outcome, message in cases if outcome == "skipped"]
    for reason, count in Counter(reason for reason, _ in skipped).most_common():
        files = Counter(name.split("::")[0].rsplit(".", 1)[-1] for r, name in skipped if r == reason)
        where = ", ".join(f"{file} {n}" for file, n in sorted(files.items()))
        lines.append(f"  skipped {count:3d}: {reason}\n               in {where}")
    deselected = report / "pytest-deselected.json"
    if deselected.is_file():
        by_marker = Counter(m for item in json.loads(deselected.read_text()) for m in item["markers"] or ["other"])
        for marker, count in sorted(by_marker.items()):
            why = {"gpu": "" if cuda_gpu_present() else "; no CUDA GPU here",
                   "trt": "" if tensorrt_present() else "; TensorRT is not installed here"}.get(marker, "")  # fmt: skip
            how = MARKER_HOW.get(marker, f"pytest -m {marker}")
            lines.append(f"  not selected {count:3d}: marked {marker} (run with {how}{why})")
    return lines


def cpp_lines(report: Path) -> list[str]:
    not_built = report / "cpp-not-built.txt"
    if not_built.is_file():
        return [f"C/C++ library and ctests: NOT built: {not_built.read_text().strip()}"]
    builds = sorted({p.name.rsplit("-", 1)[0] for p in report.glob("*-configure.log")})
    if not builds:
        return ["C/C++ library and ctests: did not run (pytest failed first, or scripts/build_cpp.sh was not called)"]
    lines = []
    not_built: dict[str, list[str]] = {}  # "part (reason)" -> the builds that left it out, in configure order
    for build in builds:
        xml = report / f"{build}-ctest.xml"
        if xml.is_file():
            cases = junit_cases(xml)
            outcomes = Counter(outcome for _, outcome, _ in cases)
            lines.append(
                f"ctest {build}/: {outcomes['passed']} passed, {outcomes['failed']} failed, "
                f"{outcomes['skipped']} skipped of {len(cases)}"
            )
            lines += [f"  skipped: {name.split('::')[-1]}" for name, outcome, _ in cases if outcome == "skipped"]
        else:
            lines.append(f"ctest {build}/: did not run (configure or build failed: see the output above)")
        for line in (report / f"{build}-configure.log").read_text().splitlines():
            match = NOT_BUILT.search(line)
            if match:
                not_built.setdefault(f"{match.group(1)} ({match.group(2)})", []).append(build)
    for what, where in not_built.items():
        only = "" if len(where) == len(builds) else f" [{', '.join(where)} only]"
        lines.append(f"  not built: {what}{only}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the folder make test wrote its reports into")
    parser.add_argument("--pytest-exit", type=int, default=None, help="pytest's exit status, to say why it stopped")
    parser.add_argument("--cpp-exit", type=int, default=None, help="scripts/build_cpp.sh's exit status")
    args = parser.parse_args()
    lines = pytest_lines(args.report, args.pytest_exit) + cpp_lines(args.report)
    if args.pytest_exit is not None and args.cpp_exit is not None:
        verdict = "passed" if args.pytest_exit == 0 and args.cpp_exit == 0 else "FAILED"
        lines.append(f"make test {verdict} (pytest exit {args.pytest_exit}, C/C++ build + ctest exit {args.cpp_exit})")
    rule = "=" * 118
    print(f"\n{rule}\nmake test: what ran, what did not and why (README.md, 'Tests')")
    print("\n".join(lines))
    print(rule)


if __name__ == "__main__":
    main()
