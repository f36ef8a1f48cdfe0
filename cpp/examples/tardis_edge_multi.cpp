// tardis_edge_multi: every animal of every frame of a video file or camera, found, posed and tracked, as CSV,
// through the C API (tardis_multi), with an artifact exported from multi-animal training (model.json "finder").
//
//   tardis_edge_multi ARTIFACT_DIR VIDEO|CAMERA_INDEX [--out tracks.csv] [--backend auto|opencv-dnn|tensorrt]
//                     [--precision fp32] [--engine FILE] [--finder-precision P] [--max-animals N]
//                     [--detect-every N] [--expected-animals N] [--max-frames N] [--no-track] [--smooth]
//                     [--no-refine-tracked]
//
// Per frame, as `tardis-edge predict --max-animals` (the Python runtime): the finder on the whole frame (every
// --detect-every frames, and whenever fewer than --expected-animals are held), pose on each animal's box and on the
// refined box (between finder runs only the first with --no-refine-tracked), duplicates dropped, track ids from the
// tracker. CSV: one row per animal: frame, track_id (-1: not tracked), score (instance score), box_x, box_y, box_w,
// box_h (the crop box, image pixels), then <name>_x, <name>_y, <name>_score per keypoint ("nan" where not found).
// Without --out the CSV goes to stdout; with it, to a temporary file renamed onto the target at the end. Timing and
// counts go to stderr: the frame rate of the library calls (pre-processing + inference + decoding + tracking) and of
// the whole loop (also video decoding and CSV writing).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <vector>

#include "tardis_edge.h"

namespace {

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s ARTIFACT_DIR VIDEO|CAMERA_INDEX [--out FILE.csv] [--backend auto|opencv-dnn|tensorrt]\n"
                 "       [--precision fp32] [--engine FILE] [--finder-precision P] [--max-animals N]\n"
                 "       [--detect-every N] [--expected-animals N] [--max-frames N] [--no-track] [--smooth]\n"
                 "       [--no-refine-tracked]\n",
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

bool parse_int(const char* flag, const char* value, int* out) {
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (end == value || *end != '\0' || v < -1 || v > 1000000) {
        std::fprintf(stderr, "%s \"%s\" is not an integer >= -1\n", flag, value);
        return false;
    }
    *out = static_cast<int>(v);
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
    tardis_runner_options runner_options;
    tardis_runner_options_init(&runner_options);
    tardis_multi_options options;
    tardis_multi_options_init(&options);
    int max_frames = -1;
    for (int i = 3; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--no-track") {
            options.track = 0;
            continue;
        }
        if (arg == "--smooth") {
            options.smooth = 1;
            continue;
        }
        if (arg == "--no-refine-tracked") {
            options.refine_tracked = 0;
            continue;
        }
        if (i + 1 >= argc) return usage(argv[0]);
        const char* value = argv[++i];
        bool ok = true;
        if (arg == "--out") {
            out_path = value;
        } else if (arg == "--backend") {
            ok = parse_backend(value, &runner_options.backend);
            if (!ok) std::fprintf(stderr, "unknown backend \"%s\"; use auto, opencv-dnn or tensorrt\n", value);
        } else if (arg == "--precision") {
            runner_options.precision = value;
        } else if (arg == "--engine") {
            runner_options.engine_path = value;
        } else if (arg == "--finder-precision") {
            options.finder_precision = value;
        } else if (arg == "--max-animals") {
            ok = parse_int(arg.c_str(), value, &options.max_animals);
        } else if (arg == "--detect-every") {
            ok = parse_int(arg.c_str(), value, &options.detect_every);
        } else if (arg == "--expected-animals") {
            ok = parse_int(arg.c_str(), value, &options.expected_animals);
        } else if (arg == "--max-frames") {
            ok = parse_int(arg.c_str(), value, &max_frames);
        } else {
            return usage(argv[0]);
        }
        if (!ok) return 2;
    }

    tardis_runner* runner = nullptr;
    if (tardis_runner_create(artifact.c_str(), &runner_options, &runner) != TARDIS_OK) {
        std::fprintf(stderr, "cannot load %s: %s\n", artifact.c_str(), tardis_last_error());
        return 1;
    }
    tardis_multi* multi = nullptr;
    if (tardis_multi_create(runner, &options, &multi) != TARDIS_OK) {
        std::fprintf(stderr, "%s: %s\n", artifact.c_str(), tardis_last_error());
        tardis_runner_destroy(runner);
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
        tardis_multi_destroy(multi);
        tardis_runner_destroy(runner);
        return 1;
    }
    const std::string tmp_path = out_path.empty() ? "" : out_path + ".tmp";
    FILE* out = out_path.empty() ? stdout : std::fopen(tmp_path.c_str(), "w");
    if (!out) {
        std::fprintf(stderr, "cannot write %s\n", tmp_path.c_str());
        tardis_multi_destroy(multi);
        tardis_runner_destroy(runner);
        return 1;
    }
    const int k = tardis_runner_num_keypoints(runner);
    std::fprintf(out, "frame,track_id,score,box_x,box_y,box_w,box_h");
    for (int j = 0; j < k; ++j) {
        const char* name = tardis_runner_keypoint_name(runner, j);
        std::fprintf(out, ",%s_x,%s_y,%s_score", name, name, name);
    }
    std::fprintf(out, "\n");

    // Rows for every animal a frame can have (grown when the maximum is open and a frame holds more).
    int capacity = tardis_multi_max_animals(multi) > 0 ? tardis_multi_max_animals(multi) : 16;
    std::vector<tardis_animal> animals(static_cast<size_t>(capacity));
    std::vector<float> keypoints(static_cast<size_t>(capacity) * k * 2), scores(static_cast<size_t>(capacity) * k);
    cv::Mat frame;
    long frames = 0, rows = 0, tracked = 0, detections = 0, dropped = 0;
    double library_seconds = 0.0;
    int status = 0;
    const auto loop_start = std::chrono::steady_clock::now();
    while ((max_frames < 0 || frames < max_frames) && capture.read(frame)) {
        if (frame.type() != CV_8UC3) {
            std::fprintf(stderr, "frame %ld is not 8-bit BGR (type %d)\n", frames, frame.type());
            status = 1;
            break;
        }
        const tardis_image image{frame.data, frame.cols, frame.rows, frame.step[0], TARDIS_PIXEL_BGR8};
        int count = 0;
        const auto start = std::chrono::steady_clock::now();
        tardis_status s = tardis_multi_process(multi, &image, static_cast<int>(frames), animals.data(),
                                               keypoints.data(), scores.data(), capacity, &count);
        if (s == TARDIS_ERROR_INVALID_ARGUMENT && count > capacity) {  // more animals than rows: grow, read again
            capacity = count;
            animals.resize(static_cast<size_t>(capacity));
            keypoints.resize(static_cast<size_t>(capacity) * k * 2);
            scores.resize(static_cast<size_t>(capacity) * k);
            s = tardis_multi_results(multi, animals.data(), keypoints.data(), scores.data(), capacity, &count);
        }
        library_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (s != TARDIS_OK) {
            std::fprintf(stderr, "frame %ld: %s\n", frames, tardis_last_error());
            status = 1;
            break;
        }
        tardis_multi_frame info{};
        tardis_multi_last_frame(multi, &info);
        detections += info.detected;
        dropped += info.num_dropped;
        for (int i = 0; i < count; ++i) {
            const tardis_animal& a = animals[static_cast<size_t>(i)];
            std::fprintf(out, "%ld,%d,%.5f,%.3f,%.3f,%.3f,%.3f", frames, a.track_id, a.score, a.box.x, a.box.y,
                         a.box.width, a.box.height);
            for (int j = 0; j < k; ++j) {
                const size_t r = static_cast<size_t>(i) * k + j;
                std::fprintf(out, ",%.3f,%.3f,%.5f", keypoints[2 * r], keypoints[2 * r + 1], scores[r]);
            }
            std::fprintf(out, "\n");
            tracked += a.track_id >= 0;
        }
        rows += count;
        ++frames;
    }
    const double loop_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count();
    std::fflush(stdout);  // the CSV before the summary when both go to a terminal
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
    std::fprintf(stderr,
                 "%ld frames, %ld animals (%ld tracked), finder on %ld frames, %ld beyond the maximum; backend %s: "
                 "%.2f ms per frame in the library (%.1f fps), %.1f fps with video decoding and CSV\n",
                 frames, rows, tracked, detections, dropped, tardis_backend_name(tardis_runner_backend(runner)),
                 frames ? 1e3 * library_seconds / frames : 0.0, library_seconds > 0 ? frames / library_seconds : 0.0,
                 loop_seconds > 0 ? frames / loop_seconds : 0.0);
    tardis_multi_destroy(multi);
    tardis_runner_destroy(runner);
    return status;
}
