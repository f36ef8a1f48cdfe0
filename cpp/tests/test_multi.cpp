// Multi-animal pose + tracking through the C API (tardis_multi, OpenCV DNN backend) against the Python runtime
// (tardis_edge.runtime.multi.open_multi: ONNX Runtime, tardis_edge.multi, tardis_edge.tracking) on video frames,
// written by make_multi_reference.py: per frame the same number of animals in the same order, the same track ids
// and finder frames, boxes and keypoints within 0.05 px, scores within 1e-3. Then the error paths: no finder, bad
// options, NULL arguments, a capacity too small (the count says how many), frames out of order.
//
// With --grid-steps (a trained artifact): the C++ warp agrees with cv2.warpAffine within one grey level, not bit for
// bit (OpenCV >= 4.11 rounds otherwise); on the flies clip that moves the finder's box sizes by ~3e-4 (relative) and
// so the first-pass keypoints by a few hundredths of a pixel, and where one lies that close to a line of the refine
// box's 0.5 px grid (geometry.REFINE_BOX_GRID) the box takes one grid step more or less on that side: the crop moves
// by a quarter pixel and the animal's keypoints by a fraction of a pixel. Such an animal's box must lie within one
// grid step (0.65 px after padding), its keypoints within 0.5 px, scores 0.05; every other animal keeps the strict
// bounds, and the animals, their order and track ids must agree on every frame. The tiny artifact's outputs are
// dominated by fixed peaks, so its test allows no such step.
//
// usage: test_multi <reference_dir> [--grid-steps]   (multi_source.txt there names the artifact, video, frames)
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "tardis_edge.h"

namespace {

constexpr double kPixelTolerance = 0.05;  // image pixels, as test_e2e (the FP32 export bound)
constexpr double kScoreTolerance = 1e-3;  // OpenCV DNN vs ONNX Runtime convolutions
constexpr double kSameBox = 1e-3;         // image pixels: the same crop box (boxes are exact unless a grid step)
constexpr double kGridStepBox = 0.65;     // one 0.5 px grid step of the refine box, aspect-corrected and padded 1.25
constexpr double kGridStepPixels = 0.5;   // keypoints of an animal whose crop moved by a grid step
constexpr double kGridStepScore = 0.05;

struct Animal {
    int track_id = -1;
    double score = 0;
    double box[4] = {0, 0, 0, 0};
    std::vector<double> keypoints;  // (K, 3) x y score
};

struct Frame {
    int index = 0;
    int detected = 0;
    std::vector<Animal> animals;
};

double number(const std::string& s) { return s == "nan" ? NAN : std::stod(s); }

std::vector<Frame> read_reference(const std::string& path) {
    std::ifstream in(path);
    std::vector<Frame> frames;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string tag;
        Frame frame;
        int m = 0;
        f >> tag >> frame.index >> frame.detected >> m;
        if (tag != "frame" || f.fail()) throw std::runtime_error(path + ": malformed line: " + line);
        for (int i = 0; i < m && std::getline(in, line); ++i) {
            std::istringstream a(line);
            Animal animal;
            std::string s;
            int k = 0;
            a >> animal.track_id >> s;
            animal.score = number(s);
            for (double& v : animal.box) {
                a >> s;
                v = number(s);
            }
            a >> k;
            for (int j = 0; j < 3 * k && a >> s; ++j) animal.keypoints.push_back(number(s));
            if (a.fail() || static_cast<int>(animal.keypoints.size()) != 3 * k)
                throw std::runtime_error(path + ": malformed animal: " + line);
            frame.animals.push_back(animal);
        }
        frames.push_back(frame);
    }
    return frames;
}

std::vector<cv::Mat> read_frames(const std::string& video, int n) {
    cv::VideoCapture capture(video);
    std::vector<cv::Mat> frames;
    cv::Mat frame;
    while (static_cast<int>(frames.size()) < n && capture.read(frame)) frames.push_back(frame.clone());
    CHECK_MSG(static_cast<int>(frames.size()) == n, video + ": could not read " + std::to_string(n) + " frames");
    return frames;
}

tardis_image as_image(const cv::Mat& bgr) {
    return tardis_image{bgr.data, bgr.cols, bgr.rows, bgr.step[0], TARDIS_PIXEL_BGR8};
}

tardis_runner* open_runner(const std::string& artifact) {
    tardis_runner_options options;
    tardis_runner_options_init(&options);
    options.backend = TARDIS_BACKEND_OPENCV_DNN;
    tardis_runner* runner = nullptr;
    const tardis_status s = tardis_runner_create(artifact.c_str(), &options, &runner);
    CHECK_MSG(s == TARDIS_OK, artifact + ": " + tardis_last_error());
    return runner;
}

struct Outputs {
    std::vector<tardis_animal> animals;
    std::vector<float> keypoints, scores;
    Outputs(int capacity, int k)
        : animals(static_cast<size_t>(capacity)), keypoints(static_cast<size_t>(capacity) * k * 2, -7.0f),
          scores(static_cast<size_t>(capacity) * k, -7.0f) {}
};

// One configuration of make_multi_reference.py's CONFIGS against its reference file.
void compare_config(tardis_runner* runner, const std::vector<cv::Mat>& frames, const std::string& reference,
                    int detect_every, int expected_animals, bool refine_tracked, bool grid_steps) {
    const std::vector<Frame> ref = read_reference(reference);
    CHECK_MSG(ref.size() == frames.size(), reference + ": " + std::to_string(ref.size()) + " frames");
    tardis_multi_options options;
    tardis_multi_options_init(&options);
    options.detect_every = detect_every;
    options.expected_animals = expected_animals;
    options.refine_tracked = refine_tracked;
    tardis_multi* multi = nullptr;
    if (tardis_multi_create(runner, &options, &multi) != TARDIS_OK) {
        std::fprintf(stderr, "FAILED: tardis_multi_create: %s\n", tardis_last_error());
        tardis::test::failures()++;
        return;
    }
    const int k = tardis_runner_num_keypoints(runner), capacity = 64;
    double worst = 0, worst_box = 0, worst_score = 0, worst_step = 0;
    int animals = 0, tracked = 0, detections = 0, steps = 0;
    for (size_t f = 0; f < frames.size() && f < ref.size(); ++f) {
        Outputs out(capacity, k);
        int count = -1;
        const tardis_image image = as_image(frames[f]);
        const tardis_status s = tardis_multi_process(multi, &image, ref[f].index, out.animals.data(),
                                                     out.keypoints.data(), out.scores.data(), capacity, &count);
        CHECK_MSG(s == TARDIS_OK, tardis_last_error());
        tardis_multi_frame info{};
        CHECK(tardis_multi_last_frame(multi, &info) == TARDIS_OK);
        const std::string where = reference + " frame " + std::to_string(ref[f].index);
        CHECK_MSG(info.frame_index == ref[f].index && info.detected == ref[f].detected && info.num_animals == count,
                  where + ": frame info (detected " + std::to_string(info.detected) + ")");
        CHECK_MSG(count == static_cast<int>(ref[f].animals.size()),
                  where + ": " + std::to_string(count) + " animals, Python " + std::to_string(ref[f].animals.size()));
        detections += info.detected;
        for (int i = 0; i < count && i < static_cast<int>(ref[f].animals.size()); ++i) {
            const Animal& a = ref[f].animals[static_cast<size_t>(i)];
            const tardis_animal& b = out.animals[static_cast<size_t>(i)];
            const std::string who = where + " animal " + std::to_string(i);
            CHECK_MSG(b.track_id == a.track_id,
                      who + ": track " + std::to_string(b.track_id) + ", Python " + std::to_string(a.track_id));
            const double box[4] = {b.box.x, b.box.y, b.box.width, b.box.height};
            double box_err = 0, kp_err = 0, score_err = std::fabs(b.score - a.score);
            for (int c = 0; c < 4; ++c) box_err = std::max(box_err, std::fabs(box[c] - a.box[c]));
            for (int j = 0; j < k; ++j) {
                const double* r = &a.keypoints[3 * static_cast<size_t>(j)];
                const float* xy = &out.keypoints[(static_cast<size_t>(i) * k + j) * 2];
                score_err = std::max(score_err, std::fabs(out.scores[static_cast<size_t>(i) * k + j] - r[2]));
                CHECK_MSG(std::isnan(xy[0]) == std::isnan(r[0]),
                          who + " keypoint " + std::to_string(j) + ": found differs");
                if (!std::isnan(r[0]) && !std::isnan(xy[0]))
                    kp_err = std::max({kp_err, std::fabs(xy[0] - r[0]), std::fabs(xy[1] - r[1])});
            }
            if (grid_steps && box_err > kSameBox) {  // the crop moved by a refine-grid step (see the top)
                ++steps;
                worst_step = std::max(worst_step, kp_err);
                CHECK_MSG(box_err <= kGridStepBox && kp_err <= kGridStepPixels && score_err <= kGridStepScore,
                          who + ": box " + std::to_string(box_err) + " px, keypoints " + std::to_string(kp_err) +
                              " px, scores " + std::to_string(score_err) + " from Python: more than one grid step");
            } else {
                worst_box = std::max(worst_box, box_err);
                worst = std::max(worst, kp_err);
                worst_score = std::max(worst_score, score_err);
            }
            ++animals;
            tracked += b.track_id >= 0;
        }
    }
    tardis_multi_destroy(multi);
    CHECK_MSG(worst <= kPixelTolerance, reference + ": max keypoint error " + std::to_string(worst) + " px");
    CHECK_MSG(worst_box <= kPixelTolerance, reference + ": max box error " + std::to_string(worst_box) + " px");
    CHECK_MSG(worst_score <= kScoreTolerance, reference + ": max score error " + std::to_string(worst_score));
    CHECK_MSG(animals >= static_cast<int>(frames.size()) && tracked > 0,
              reference + ": too few animals (" + std::to_string(animals) + ") or none tracked: an empty comparison");
    std::printf("%s: %zu frames (%d with the finder), %d animals (%d tracked) as in Python: max |error| keypoints "
                "%.2e px, boxes %.2e px, scores %.2e",
                reference.c_str(), frames.size(), detections, animals, tracked, worst, worst_box, worst_score);
    if (grid_steps) std::printf("; %d animals a refine-grid step apart (keypoints within %.2f px)", steps, worst_step);
    std::printf("\n");
}

// `status` is `want` and the last error mentions `needle`.
void expect(tardis_status status, tardis_status want, const char* needle, const std::string& what) {
    CHECK_MSG(status == want, what + ": got " + tardis_status_name(status) + " (" + tardis_last_error() + ")");
    CHECK_MSG(std::strstr(tardis_last_error(), needle) != nullptr,
              what + ": message \"" + tardis_last_error() + "\" does not mention \"" + needle + "\"");
}

void test_errors(tardis_runner* runner, const std::string& single_artifact, const std::vector<cv::Mat>& frames) {
    tardis_multi* multi = reinterpret_cast<tardis_multi*>(1);  // must be reset to NULL on failure
    expect(tardis_multi_create(nullptr, nullptr, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "runner is NULL",
           "NULL runner");
    CHECK(multi == nullptr);
    expect(tardis_multi_create(runner, nullptr, nullptr), TARDIS_ERROR_INVALID_ARGUMENT, "out_multi is NULL",
           "NULL out");

    tardis_runner* single = open_runner(single_artifact);
    CHECK(tardis_runner_has_finder(single) == 0 && tardis_runner_has_finder(runner) == 1);
    expect(tardis_multi_create(single, nullptr, &multi), TARDIS_ERROR_UNSUPPORTED, "has no animal finder", "no finder");
    CHECK(multi == nullptr);
    tardis_runner_destroy(single);

    tardis_multi_options options;
    tardis_multi_options_init(&options);
    options.struct_size = 0;
    expect(tardis_multi_create(runner, &options, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "tardis_multi_options_init",
           "struct_size 0");
    tardis_multi_options_init(&options);
    options.detect_every = 0;
    expect(tardis_multi_create(runner, &options, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "detect_every >= 1",
           "detect_every 0");
    tardis_multi_options_init(&options);
    options.finder_precision = "fp16";
    expect(tardis_multi_create(runner, &options, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "no fp16 finder graph",
           "missing finder precision");
    tardis_multi_options_init(&options);
    options.min_similarity = 1.5;
    expect(tardis_multi_create(runner, &options, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "min_similarity",
           "min_similarity 1.5");

    // a caller built against an older header: its smaller struct_size keeps the later fields at their defaults
    tardis_multi_options_init(&options);
    options.struct_size = offsetof(tardis_multi_options, finder_precision);
    options.finder_precision = "not read";
    CHECK_MSG(tardis_multi_create(runner, &options, &multi) == TARDIS_OK, tardis_last_error());
    tardis_multi_destroy(multi);

    CHECK_MSG(tardis_multi_create(runner, nullptr, &multi) == TARDIS_OK, tardis_last_error());
    CHECK(tardis_multi_max_animals(multi) == 2 && tardis_multi_max_animals(nullptr) == 0);
    const int k = tardis_runner_num_keypoints(runner);
    Outputs out(2, k);
    const tardis_image image = as_image(frames[0]);
    int count = -1;
    expect(tardis_multi_process(nullptr, &image, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                                &count),
           TARDIS_ERROR_INVALID_ARGUMENT, "multi is NULL", "NULL multi");
    expect(tardis_multi_process(multi, nullptr, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                                &count),
           TARDIS_ERROR_INVALID_ARGUMENT, "image is NULL", "NULL image");
    expect(tardis_multi_process(multi, &image, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                                nullptr),
           TARDIS_ERROR_INVALID_ARGUMENT, "count is NULL", "NULL count");
    expect(tardis_multi_process(multi, &image, 0, nullptr, out.keypoints.data(), out.scores.data(), 2, &count),
           TARDIS_ERROR_INVALID_ARGUMENT, "must not be NULL when capacity > 0", "NULL animals");
    tardis_multi_frame info{};
    CHECK(tardis_multi_last_frame(multi, &info) == TARDIS_OK && info.num_animals == 0);  // nothing processed yet

    // capacity 1 for two animals: the frame is processed, the count says 2, the results can be read afterwards
    Outputs small(1, k);
    expect(tardis_multi_process(multi, &image, 0, small.animals.data(), small.keypoints.data(), small.scores.data(), 1,
                                &count),
           TARDIS_ERROR_INVALID_ARGUMENT, "has 2 animals but capacity is 1", "capacity 1");
    CHECK_MSG(count == 2, "count " + std::to_string(count) + " after a too small capacity");
    CHECK(small.scores[0] == -7.0f);  // nothing written
    count = -1;
    expect(tardis_multi_results(multi, nullptr, nullptr, nullptr, 0, &count), TARDIS_ERROR_INVALID_ARGUMENT,
           "capacity is 0", "capacity 0 query");
    CHECK(count == 2);
    CHECK_MSG(tardis_multi_results(multi, out.animals.data(), out.keypoints.data(), out.scores.data(), 2, &count) ==
                  TARDIS_OK,
              tardis_last_error());
    CHECK(count == 2 && out.animals[0].score > 0 && out.scores[0] != -7.0f);

    // frames must come in order; a negative index means "the next one"
    expect(tardis_multi_process(multi, &image, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                                &count),
           TARDIS_ERROR_INVALID_ARGUMENT, "does not come after the last frame 0", "repeated frame");
    CHECK(tardis_multi_process(multi, &image, -1, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                               &count) == TARDIS_OK);
    CHECK(tardis_multi_last_frame(multi, &info) == TARDIS_OK && info.frame_index == 1);
    CHECK(tardis_multi_reset(multi) == TARDIS_OK);
    CHECK(tardis_multi_process(multi, &image, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                               &count) == TARDIS_OK);
    CHECK(count == 2 && out.animals[0].track_id >= 0 && out.animals[1].track_id >= 0 &&
          out.animals[0].track_id != out.animals[1].track_id);
    expect(tardis_multi_reset(nullptr), TARDIS_ERROR_INVALID_ARGUMENT, "multi is NULL", "reset NULL");
    tardis_multi_destroy(multi);
    tardis_multi_destroy(nullptr);

    // tracking off: the same animals, every track id -1
    tardis_multi_options_init(&options);
    options.track = 0;
    CHECK_MSG(tardis_multi_create(runner, &options, &multi) == TARDIS_OK, tardis_last_error());
    CHECK(tardis_multi_process(multi, &image, 0, out.animals.data(), out.keypoints.data(), out.scores.data(), 2,
                               &count) == TARDIS_OK);
    CHECK(count == 2 && out.animals[0].track_id == -1 && out.animals[1].track_id == -1);
    tardis_multi_destroy(multi);
}

}  // namespace

int main(int argc, char** argv) {
    const bool grid_steps = argc == 3 && std::string(argv[2]) == "--grid-steps";
    if (argc != 2 && !grid_steps) {
        std::fprintf(stderr, "usage: %s <reference_dir> [--grid-steps]\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    std::ifstream source(tardis::test::need_path(dir + "/multi_source.txt", "make_multi_reference.py found no video"));
    std::string artifact, video;
    int n = 0;
    std::getline(source, artifact);
    std::getline(source, video);
    source >> n;
    const std::vector<cv::Mat> frames = read_frames(video, n);
    tardis_runner* runner = open_runner(artifact);
    if (!runner || frames.empty()) return tardis::test::finish("test_multi");
    compare_config(runner, frames, dir + "/multi_every_frame.txt", 1, -1, true, grid_steps);
    compare_config(runner, frames, dir + "/multi_held_boxes.txt", 4, 0, true, grid_steps);
    compare_config(runner, frames, dir + "/multi_held_one_pass.txt", 4, 0, false, grid_steps);
    if (tardis_runner_has_finder(runner) && std::ifstream(dir + "/tiny_single/model.json"))
        test_errors(runner, dir + "/tiny_single", frames);
    tardis_runner_destroy(runner);
    return tardis::test::finish("test_multi");
}
