// CPU heatmap decoding against ../shared/golden/heatmap_codec.npz, through the public C API, with the Python
// reference's tolerances (tests/test_decode.py): argmax exact, msra exact in input pixels (heatmap px * 4), dark
// 1e-4 heatmap px, soft-argmax 1e-4 heatmap px; invalid rows (score <= 0) at (-1, -1).
//
// usage: test_decode <data_dir>
#include <cmath>
#include <string>
#include <vector>

#include "check.hpp"
#include "npz.hpp"
#include "tardis_edge.h"

namespace {

using tardis::test::Array;

constexpr float kStride = 4.0f;  // golden: 256x256 input, 64x64 heatmaps

struct Decoded {
    std::vector<float> keypoints, scores;
};

Decoded decode(const Array& heatmaps, tardis_decode_method method, float beta) {
    const int n = static_cast<int>(heatmaps.shape[0]), k = static_cast<int>(heatmaps.shape[1]);
    Decoded d{std::vector<float>(static_cast<size_t>(n) * k * 2, NAN), std::vector<float>(static_cast<size_t>(n) * k, NAN)};
    const tardis_status s = tardis_decode_heatmaps(heatmaps.data.data(), n, k, static_cast<int>(heatmaps.shape[2]),
                                                   static_cast<int>(heatmaps.shape[3]), method, beta,
                                                   d.keypoints.data(), d.scores.data());
    CHECK_MSG(s == TARDIS_OK, tardis_last_error());
    return d;
}

// Golden keypoints in `scale` units (1: heatmap px, 4: input px) within `tol` on valid rows; (-1, -1) on invalid.
void compare_peak_method(const std::map<std::string, Array>& g, const char* name, tardis_decode_method method,
                         float scale, float tol) {
    const Array& ref_kps = g.at(std::string(name) + "_keypoints");
    const Array& ref_scores = g.at(std::string(name) + "_scores");
    const Decoded d = decode(g.at("heatmaps"), method, 0.0f);
    int invalid = 0;
    double worst = 0.0;
    for (size_t r = 0; r < ref_scores.data.size(); ++r) {
        const bool valid = ref_scores.data[r] > 0;
        CHECK_MSG((d.scores[r] > 0) == valid, std::string(name) + " validity differs at row " + std::to_string(r));
        CHECK_MSG(std::fabs(d.scores[r] - ref_scores.data[r]) <= 1e-6f,
                  std::string(name) + " score at row " + std::to_string(r));
        if (!valid) {
            ++invalid;
            CHECK_MSG(d.keypoints[2 * r] == -1.0f && d.keypoints[2 * r + 1] == -1.0f,
                      std::string(name) + " invalid row " + std::to_string(r) + " is not at (-1, -1)");
            continue;
        }
        for (int c = 0; c < 2; ++c)
            worst = std::fmax(worst, std::fabs(d.keypoints[2 * r + c] * scale - ref_kps.data[2 * r + c]));
    }
    CHECK_MSG(invalid > 0, "the golden set is expected to contain invalid rows");
    CHECK_MSG(worst <= tol, std::string(name) + ": max error " + std::to_string(worst) + " > " + std::to_string(tol));
    std::printf("%-12s max |error| %.3g (tolerance %.3g), %d invalid rows\n", name, worst, tol, invalid);
}

void test_soft_argmax(const std::map<std::string, Array>& g) {
    const float beta = g.at("softargmax_beta").data.at(0);
    const Array& ref = g.at("softargmax_heatmap_xy");
    const Decoded d = decode(g.at("heatmaps"), TARDIS_DECODE_SOFT_ARGMAX, beta);
    double worst = 0.0;
    for (size_t i = 0; i < ref.data.size(); ++i) worst = std::fmax(worst, std::fabs(d.keypoints[i] - ref.data[i]));
    CHECK_MSG(worst <= 1e-4, "soft-argmax max error " + std::to_string(worst));
    std::printf("%-12s max |error| %.3g (tolerance 1e-4), beta %g\n", "soft_argmax", worst, beta);
}

// Ties resolve to the first maximum in row-major order (the reference's torch.max).
void test_ties_first_row_major() {
    std::vector<float> map(8 * 8, 0.0f);
    map[5 * 8 + 2] = 1.0f;
    map[3 * 8 + 6] = 1.0f;  // earlier in row-major order
    map[5 * 8 + 7] = 1.0f;
    float kp[2], score;
    CHECK(tardis_decode_heatmaps(map.data(), 1, 1, 8, 8, TARDIS_DECODE_ARGMAX, 0.0f, kp, &score) == TARDIS_OK);
    CHECK(kp[0] == 6.0f && kp[1] == 3.0f && score == 1.0f);
}

// MSRA border rules (golden.json notes): the x step needs 1 < x < W-1, the y step 1 < y < H-1.
void test_msra_borders() {
    const int w = 7, h = 5;  // odd, non-square
    struct Case {
        int px, py;
        float ex, ey;
    };
    // Peak 1.0 with a higher right/lower neighbour (0.5) than left/upper (0.25) wherever those exist.
    const Case cases[] = {{1, 2, 1.0f, 2.25f},  {2, 2, 2.25f, 2.25f}, {5, 2, 5.25f, 2.25f},
                          {6, 2, 6.0f, 2.25f},  {3, 1, 3.25f, 1.0f},  {3, 3, 3.25f, 3.25f},
                          {3, 4, 3.25f, 4.0f},  {0, 0, 0.0f, 0.0f}};
    for (const Case& c : cases) {
        std::vector<float> map(static_cast<size_t>(w) * h, 0.0f);
        auto set = [&](int x, int y, float v) {
            if (x >= 0 && x < w && y >= 0 && y < h) map[static_cast<size_t>(y) * w + x] = v;
        };
        set(c.px - 1, c.py, 0.25f);
        set(c.px + 1, c.py, 0.5f);
        set(c.px, c.py - 1, 0.25f);
        set(c.px, c.py + 1, 0.5f);
        set(c.px, c.py, 1.0f);
        float kp[2], score;
        CHECK(tardis_decode_heatmaps(map.data(), 1, 1, h, w, TARDIS_DECODE_MSRA, 0.0f, kp, &score) == TARDIS_OK);
        CHECK_MSG(kp[0] == c.ex && kp[1] == c.ey, "peak (" + std::to_string(c.px) + ", " + std::to_string(c.py) +
                                                      ") decoded to (" + std::to_string(kp[0]) + ", " +
                                                      std::to_string(kp[1]) + ")");
    }
}

void test_bad_arguments() {
    float map[4] = {0, 0, 0, 1}, kp[2], score;
    CHECK(tardis_decode_heatmaps(map, 0, 1, 2, 2, TARDIS_DECODE_MSRA, 0.0f, kp, &score) ==
          TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("(N, K, H, W)") != std::string::npos);
    CHECK(tardis_decode_heatmaps(map, 1, 1, 2, 2, TARDIS_DECODE_SOFT_ARGMAX, 0.0f, kp, &score) ==
          TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("beta must be a positive") != std::string::npos);
    CHECK(tardis_decode_heatmaps(map, 1, 1, 2, 2, static_cast<tardis_decode_method>(9), 1.0f, kp, &score) ==
          TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(tardis_decode_heatmaps(nullptr, 1, 1, 2, 2, TARDIS_DECODE_MSRA, 1.0f, kp, &score) ==
          TARDIS_ERROR_INVALID_ARGUMENT);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <data_dir>\n", argv[0]);
        return 2;
    }
    const std::string path = tardis::test::need_path(std::string(argv[1]) + "/golden/heatmap_codec.npz",
                                                     "the ctests read tests/fixtures (CMake -DTARDIS_TEST_DATA_DIR)");
    const auto golden = tardis::test::load_npz(path);
    CHECK(golden.at("heatmaps").shape == (std::vector<int64_t>{8, 17, 64, 64}));
    compare_peak_method(golden, "argmax", TARDIS_DECODE_ARGMAX, 1.0f, 0.0f);
    compare_peak_method(golden, "msra", TARDIS_DECODE_MSRA, kStride, 0.0f);
    compare_peak_method(golden, "dark", TARDIS_DECODE_DARK, kStride, 1e-4f * kStride);
    test_soft_argmax(golden);
    test_ties_first_row_major();
    test_msra_borders();
    test_bad_arguments();
    return tardis::test::finish("test_decode");
}
