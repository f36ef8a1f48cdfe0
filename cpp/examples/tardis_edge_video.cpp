// tardis_edge_video: keypoints for every frame of a video file or camera, as CSV, through the C API.
//
//   tardis_edge_video ARTIFACT_DIR VIDEO|CAMERA_INDEX [--out keypoints.csv] [--backend auto|opencv-dnn|tensorrt]
//                     [--precision fp32] [--engine FILE] [--box X,Y,W,H] [--max-frames N] [--no-refine]
//
// Each frame: one pass on the whole frame (or --box), then, unless --no-refine, a second pass on the padded box
// around the first pass's confident keypoints - what `tardis-edge` (the Python runtime) does for independent
// frames and what evaluation does, so the keypoints agree with `tardis_edge.runtime.open_runner(...)(frames)`.
// CSV columns: frame, then <name>_x, <name>_y, <name>_score for each keypoint (image pixels; x and y are "nan"
// where the keypoint was not found). Without --out the CSV goes to stdout; with it, to a temporary file renamed
// onto the target at the end, so an interrupted run never leaves a half-written CSV. Timing goes to stderr.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <vector>

#include "tardis_edge.h"

namespace {

constexpr float kRefineMinScore = 0.2f;  // tardis_edge.runtime.boxes.FollowConfig.min_score
constexpr double kRefineMinSize = 16.0;  // FollowConfig.min_size (image pixels)

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s ARTIFACT_DIR VIDEO|CAMERA_INDEX [--out FILE.csv] [--backend auto|opencv-dnn|tensorrt]\n"
                 "       [--precision fp32] [--engine FILE] [--box X,Y,W,H] [--max-frames N] [--no-refine]\n",
                 argv0);
    return 2;
}

bool parse_backend(const char* name, tardis_backend* out) {
    for (tardis_backend b : {TARDIS_BACKEND_AUTO, TARDIS_BACKEND_OPENCV_DNN, TARDIS_BACKEND_TENSORRT}) {
        if (std::strcmp(name, tardis_backend_name(b)) == 0) {
            *out = b;
            return true;
        }
    }
    return false;
}

// The refine pass of the Python runtime and of evaluation (tardis_edge.runtime.boxes.box_from_prediction): the
// unpadded box around the confident keypoints (score > min_score), each side at least min_size image pixels.
// The runner pads it and fits the input's aspect ratio, as tardis_edge.geometry.box_from_xywh does.
bool box_around_keypoints(const std::vector<float>& keypoints, const std::vector<float>& scores, float min_score,
                          double min_size, tardis_box* box) {
    double lo_x = std::numeric_limits<double>::infinity(), lo_y = lo_x, hi_x = -lo_x, hi_y = -lo_x;
    bool any = false;
    for (size_t j = 0; j < scores.size(); ++j) {
        const double x = keypoints[2 * j], y = keypoints[2 * j + 1];
        if (!(scores[j] > min_score) || !std::isfinite(x) || !std::isfinite(y)) continue;
        lo_x = std::min(lo_x, x), lo_y = std::min(lo_y, y), hi_x = std::max(hi_x, x), hi_y = std::max(hi_y, y);
        any = true;
    }
    if (!any) return false;
    // Widened to tardis_edge.geometry.REFINE_BOX_GRID (0.5 px), as the Python refine box.
    const double grid = 0.5;
    lo_x = std::floor(lo_x / grid + 1e-3) * grid, lo_y = std::floor(lo_y / grid + 1e-3) * grid;
    hi_x = std::ceil(hi_x / grid - 1e-3) * grid, hi_y = std::ceil(hi_y / grid - 1e-3) * grid;
    const double w = std::max(hi_x - lo_x, min_size), h = std::max(hi_y - lo_y, min_size);
    const double cx = 0.5 * (lo_x + hi_x), cy = 0.5 * (lo_y + hi_y);
    box->x = static_cast<float>(cx - 0.5 * w);
    box->y = static_cast<float>(cy - 0.5 * h);
    box->width = static_cast<float>(w);
    box->height = static_cast<float>(h);
    return true;
}

bool is_index(const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return usage(argv[0]);
    const std::string artifact = argv[1], source = argv[2];
    std::string out_path;
    tardis_runner_options options;
    tardis_runner_options_init(&options);
    tardis_box box{};
    bool has_box = false;
    long max_frames = -1;
    bool refine = true;
    for (int i = 3; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--no-refine") {
            refine = false;
            continue;
        }
        if (i + 1 >= argc) return usage(argv[0]);
        const char* value = argv[++i];
        if (arg == "--out") {
            out_path = value;
        } else if (arg == "--backend") {
            if (!parse_backend(value, &options.backend)) {
                std::fprintf(stderr, "unknown backend \"%s\"; use auto, opencv-dnn or tensorrt\n", value);
                return 2;
            }
        } else if (arg == "--precision") {
            options.precision = value;
        } else if (arg == "--engine") {
            options.engine_path = value;
        } else if (arg == "--box") {
            if (std::sscanf(value, "%f,%f,%f,%f", &box.x, &box.y, &box.width, &box.height) != 4) {
                std::fprintf(stderr, "--box \"%s\" is not X,Y,W,H\n", value);
                return 2;
            }
            has_box = true;
        } else if (arg == "--max-frames") {
            max_frames = std::strtol(value, nullptr, 10);
        } else {
            return usage(argv[0]);
        }
    }

    tardis_runner* runner = nullptr;
    if (tardis_runner_create(artifact.c_str(), &options, &runner) != TARDIS_OK) {
        std::fprintf(stderr, "cannot load %s: %s\n", artifact.c_str(), tardis_last_error());
        return 1;
    }
    cv::VideoCapture capture;
    if (is_index(source)) {
        capture.open(std::atoi(source.c_str()));
    } else {
        capture.open(source);
    }
    if (!capture.isOpened()) {
        std::fprintf(stderr, "cannot open video or camera \"%s\" (OpenCV videoio backends: FFmpeg/GStreamer/V4L2)\n",
                     source.c_str());
        tardis_runner_destroy(runner);
        return 1;
    }

    const std::string tmp_path = out_path.empty() ? "" : out_path + ".tmp";
    FILE* out = out_path.empty() ? stdout : std::fopen(tmp_path.c_str(), "w");
    if (!out) {
        std::fprintf(stderr, "cannot write %s\n", tmp_path.c_str());
        tardis_runner_destroy(runner);
        return 1;
    }
    const int k = tardis_runner_num_keypoints(runner);
    std::fprintf(out, "frame");
    for (int j = 0; j < k; ++j) {
        const char* name = tardis_runner_keypoint_name(runner, j);
        std::fprintf(out, ",%s_x,%s_y,%s_score", name, name, name);
    }
    std::fprintf(out, "\n");

    std::vector<float> keypoints(2 * static_cast<size_t>(k)), scores(static_cast<size_t>(k));
    cv::Mat frame;
    long count = 0;
    double seconds = 0.0;
    int status = 0;
    while ((max_frames < 0 || count < max_frames) && capture.read(frame)) {
        if (frame.type() != CV_8UC3) {
            std::fprintf(stderr, "frame %ld is not 8-bit BGR (type %d)\n", count, frame.type());
            status = 1;
            break;
        }
        const tardis_image image{frame.data, frame.cols, frame.rows, frame.step[0], TARDIS_PIXEL_BGR8};
        const auto start = std::chrono::steady_clock::now();
        if (tardis_runner_run(runner, &image, has_box ? &box : nullptr, keypoints.data(), scores.data()) != TARDIS_OK) {
            std::fprintf(stderr, "frame %ld: %s\n", count, tardis_last_error());
            status = 1;
            break;
        }
        tardis_box refined{};
        if (refine && box_around_keypoints(keypoints, scores, kRefineMinScore, kRefineMinSize, &refined) &&
            tardis_runner_run(runner, &image, &refined, keypoints.data(), scores.data()) != TARDIS_OK) {
            std::fprintf(stderr, "frame %ld (refine pass): %s\n", count, tardis_last_error());
            status = 1;
            break;
        }
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(out, "%ld", count);
        for (int j = 0; j < k; ++j) std::fprintf(out, ",%.3f,%.3f,%.5f", keypoints[2 * j], keypoints[2 * j + 1], scores[j]);
        std::fprintf(out, "\n");
        ++count;
    }
    std::fflush(stdout);  // the CSV before the summary line when both go to a terminal
    if (out != stdout) {
        const bool written = std::fclose(out) == 0;
        if (status == 0 && written && std::rename(tmp_path.c_str(), out_path.c_str()) == 0) {
            std::fprintf(stderr, "wrote %s\n", out_path.c_str());
        } else {
            std::remove(tmp_path.c_str());
            if (status == 0) std::fprintf(stderr, "cannot write %s\n", out_path.c_str());
            status = 1;
        }
    }
    std::fprintf(stderr, "%ld frames, backend %s, %.2f ms per frame (pre-processing + inference + decoding)\n", count,
                 tardis_backend_name(tardis_runner_backend(runner)), count ? 1e3 * seconds / count : 0.0);
    tardis_runner_destroy(runner);
    return status;
}
