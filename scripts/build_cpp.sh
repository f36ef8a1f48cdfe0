#!/usr/bin/env bash
# Configure, build and test the C/C++ library (CMakeLists.txt, cpp/README.md).
#
#   scripts/build_cpp.sh [--sanitize] [-DOPTION=VALUE ...]
#
#   build/       Release build + ctest (always)
#   build-asan/  with --sanitize: AddressSanitizer + UndefinedBehaviorSanitizer (UB fatal) + ctest; CUDA off there
#                (device code is not instrumented, and it keeps the sanitized build fast)
#
# Extra -D options go to both configurations (e.g. -DTARDIS_TEST_ARTIFACT=/path/to/artifact). The Python used for
# the reference-data tests is $TARDIS_PYTHON, else .venv/bin/python, else python3. Exits non-zero on any failure.
# Without cmake or a C++ compiler it builds nothing and exits 0 (1 under TARDIS_REQUIRE_CPP=1, as in CI). With
# $TARDIS_REPORT_DIR set, it leaves there what scripts/test_summary.py reports: <build>-configure.log (what was not
# built), <build>-ctest.xml (JUnit) and, when it could not build, cpp-not-built.txt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sanitize=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    -D*) extra+=("$arg") ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build_cpp.sh: unknown argument '$arg' (use --sanitize or -DOPTION=VALUE)" >&2; exit 2 ;;
  esac
done

python=${TARDIS_PYTHON:-}
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=$(command -v python3); fi
fi
jobs=${TARDIS_BUILD_JOBS:-$(nproc)}
report=${TARDIS_REPORT_DIR:-}
[[ -n "$report" ]] && mkdir -p "$report"

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v "${CXX:-c++}" >/dev/null || missing+=("a C++ compiler (g++)")
if ((${#missing[@]})); then
  reason=$(printf '%s, ' "${missing[@]}")
  reason="${reason%, } not found: apt-get install cmake g++ libopencv-dev"
  echo "build_cpp.sh: the C/C++ library and its ctests are NOT built: $reason" >&2
  [[ -n "$report" ]] && echo "$reason" >"$report/cpp-not-built.txt"
  [[ "${TARDIS_REQUIRE_CPP:-}" == 1 ]] && exit 1
  exit 0
fi

configure_build_test() {
  local name=$1
  local dir="$root/$name"
  shift
  echo "== $dir"
  local log=/dev/null junit=()
  if [[ -n "$report" ]]; then
    log="$report/$name-configure.log"
    junit=(--output-junit "$report/$name-ctest.xml")
  fi
  cmake -S "$root" -B "$dir" -DTARDIS_PYTHON="$python" -DTARDIS_WERROR=ON "$@" ${extra[@]+"${extra[@]}"} | tee "$log"
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" ${junit[@]+"${junit[@]}"})
}

configure_build_test build -DCMAKE_BUILD_TYPE=Release
if [[ $sanitize == 1 ]]; then
  configure_build_test build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTARDIS_SANITIZE=ON -DTARDIS_WITH_CUDA=OFF
fi
