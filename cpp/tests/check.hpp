// Minimal test harness for the ctest executables: CHECK records a failure and goes on, main() returns the count.
// Exit code 77 means "skipped" (ctest SKIP_RETURN_CODE), used only when ../shared is missing and not required.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tardis::test {

inline int& failures() {
    static int count = 0;
    return count;
}

inline void record_failure(const char* file, int line, const std::string& what) {
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
    ++failures();
}

// `path` if it exists; otherwise exit 77 (skip), or exit 1 when TARDIS_REQUIRE_SHARED=1 (CI must not skip).
inline std::string need_path(const std::string& path, const char* hint) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) return path;
    const char* require = std::getenv("TARDIS_REQUIRE_SHARED");
    if (require && std::string(require) == "1") {
        std::fprintf(stderr, "FAILED: %s is missing but TARDIS_REQUIRE_SHARED=1: %s\n", path.c_str(), hint);
        std::exit(1);
    }
    std::fprintf(stderr, "SKIPPED: %s not found (%s)\n", path.c_str(), hint);
    std::exit(77);
}

inline int finish(const char* name) {
    if (failures()) {
        std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures());
        return 1;
    }
    std::printf("%s: all checks passed\n", name);
    return 0;
}

}  // namespace tardis::test

#define CHECK(cond)                                                                                 \
    do {                                                                                            \
        if (!(cond)) ::tardis::test::record_failure(__FILE__, __LINE__, #cond);                     \
    } while (0)

#define CHECK_MSG(cond, msg)                                                                        \
    do {                                                                                            \
        if (!(cond)) ::tardis::test::record_failure(__FILE__, __LINE__, std::string(#cond) + ": " + (msg)); \
    } while (0)
