// End to end through the C API and the OpenCV DNN backend: keypoints in image pixels on openfield frames equal the
// Python pipeline's (tardis_edge.geometry crop -> ONNX Runtime -> tardis_edge.decode -> keypoints_to_image) within
// 0.05 px, and "not found" rows agree. Also checks that BGR and RGB input, and one batch of several boxes versus
// one call per box, give the same keypoints.
//
// usage: test_e2e <data_dir> <artifact_dir> <reference.txt written by make_e2e_reference.py>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "tardis_edge.h"

namespace {

constexpr double kKeypointTolerance = 0.05;  // image pixels (the bound)
constexpr double kScoreTolerance = 1e-3;     // heatmap maxima: OpenCV vs ONNX Runtime convolutions, 1-level crops

struct Case {
    std::string png;
    bool has_box = false;
    tardis_box box{};
    std::vector<double> x, y, score;
};

std::vector<Case> read_reference(const std::string& path) {
    std::ifstream in(path);
    std::vector<Case> cases;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        std::istringstream f(line);
        Case c;
        int has_box = 0, k = 0;
        f >> c.png >> has_box >> c.box.x >> c.box.y >> c.box.width >> c.box.height >> k;
        c.has_box = has_box != 0;
        for (int j = 0; j < k; ++j) {
            std::string sx, sy;
            double s;
            f >> sx >> sy >> s;
            c.x.push_back(sx == "nan" ? NAN : std::stod(sx));
            c.y.push_back(sy == "nan" ? NAN : std::stod(sy));
            c.score.push_back(s);
        }
        if (f.fail()) throw std::runtime_error(path + ": malformed line: " + line);
        cases.push_back(c);
    }
    return cases;
}

struct Result {
    std::vector<float> keypoints, scores;
};

Result run(tardis_runner* runner, const cv::Mat& image, tardis_pixel_format format, const tardis_box* boxes, int n) {
    const int k = tardis_runner_num_keypoints(runner);
    Result r{std::vector<float>(static_cast<size_t>(n) * k * 2, -7.0f), std::vector<float>(static_cast<size_t>(n) * k, -7.0f)};
    const tardis_image img{image.data, image.cols, image.rows, image.step[0], format};
    const tardis_status s = boxes && n > 1 ? tardis_runner_run_boxes(runner, &img, boxes, n, r.keypoints.data(),
                                                                     r.scores.data())
                                           : tardis_runner_run(runner, &img, boxes, r.keypoints.data(), r.scores.data());
    CHECK_MSG(s == TARDIS_OK, tardis_last_error());
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s <data_dir> <artifact_dir> <reference.txt>\n", argv[0]);
        return 2;
    }
    tardis::test::need_path(std::string(argv[1]) + "/data/openfield-Pranav-2018-10-30",
                            "the ctests read tests/fixtures (CMake -DTARDIS_TEST_DATA_DIR)");
    const std::vector<Case> cases = read_reference(argv[3]);
    CHECK_MSG(cases.size() >= 4, std::string(argv[3]) + " holds too few cases; did the reference fixture run?");

    tardis_runner_options options;
    tardis_runner_options_init(&options);
    options.backend = TARDIS_BACKEND_OPENCV_DNN;
    tardis_runner* runner = nullptr;
    if (tardis_runner_create(argv[2], &options, &runner) != TARDIS_OK) {
        std::fprintf(stderr, "FAILED: cannot create the runner: %s\n", tardis_last_error());
        return 1;
    }
    const int k = tardis_runner_num_keypoints(runner);
    double worst = 0.0, worst_score = 0.0;
    int found = 0;
    for (const Case& c : cases) {
        CHECK(static_cast<int>(c.x.size()) == k);
        const cv::Mat bgr = cv::imread(c.png, cv::IMREAD_COLOR);
        CHECK_MSG(!bgr.empty(), c.png + " cannot be read");
        if (bgr.empty()) continue;
        const Result r = run(runner, bgr, TARDIS_PIXEL_BGR8, c.has_box ? &c.box : nullptr, 1);
        for (int j = 0; j < k; ++j) {
            const bool ref_found = c.score[j] > 0;
            CHECK_MSG((r.scores[j] > 0) == ref_found, c.png + ": keypoint " + std::to_string(j) + " found differs");
            worst_score = std::max(worst_score, std::fabs(r.scores[j] - c.score[j]));
            if (!ref_found) {
                CHECK(std::isnan(r.keypoints[2 * j]) && std::isnan(r.keypoints[2 * j + 1]));
                continue;
            }
            ++found;
            const double e = std::max(std::fabs(r.keypoints[2 * j] - c.x[j]), std::fabs(r.keypoints[2 * j + 1] - c.y[j]));
            worst = std::max(worst, std::isnan(e) ? INFINITY : e);
        }
        // The same frame as RGB gives the same answer.
        cv::Mat rgb;
        cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
        const Result r_rgb = run(runner, rgb, TARDIS_PIXEL_RGB8, c.has_box ? &c.box : nullptr, 1);
        CHECK_MSG(r_rgb.scores == r.scores, c.png + ": RGB and BGR input differ");
        if (c.has_box) {  // a batch of [box, box shifted, box]: first and last equal the single call
            tardis_box boxes[3] = {c.box, c.box, c.box};
            boxes[1].x += 17.0f;
            const Result batch = run(runner, bgr, TARDIS_PIXEL_BGR8, boxes, 3);
            for (int j = 0; j < 2 * k; ++j) {
                const float a = r.keypoints[j], b = batch.keypoints[j], b2 = batch.keypoints[4 * k + j];
                CHECK_MSG((std::isnan(a) && std::isnan(b) && std::isnan(b2)) || (a == b && a == b2),
                          c.png + ": a batch of boxes differs from one call per box");
            }
        }
    }
    tardis_runner_destroy(runner);
    CHECK_MSG(worst <= kKeypointTolerance, "max keypoint error " + std::to_string(worst) + " px");
    CHECK_MSG(worst_score <= kScoreTolerance, "max score error " + std::to_string(worst_score));
    CHECK_MSG(found > 0, "no keypoint was found in any case: the comparison would be empty");
    std::printf("%zu cases, %d keypoints found: max |error| %.2e px (tolerance %.2f), max |score error| %.2e\n",
                cases.size(), found, worst, kKeypointTolerance, worst_score);
    return tardis::test::finish("test_e2e");
}
