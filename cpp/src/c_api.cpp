// The C boundary: every entry point catches everything, stores the message in a thread-local buffer and returns a
// status. Nothing thrown inside the library leaves it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "decode.hpp"
#include "error.hpp"
#include "geometry.hpp"
#include "multi_stream.hpp"
#include "runner.hpp"
#include "tardis_edge.h"

struct tardis_runner {
    explicit tardis_runner(tardis::Runner&& r) : impl(std::move(r)) {}
    tardis::Runner impl;
};

struct tardis_multi {
    tardis_multi(tardis::Runner& runner, const tardis_multi_options& options) : stream(runner, options) {}
    tardis::MultiAnimalStream stream;
};

namespace {

thread_local std::string g_last_error;

tardis_status fail(tardis_status status, const std::string& message) {
    try {
        g_last_error = message;
    } catch (...) {  // out of memory while storing the message: keep the status
    }
    return status;
}

template <typename F>
tardis_status guarded(F&& body) noexcept {
    try {
        body();
        return TARDIS_OK;
    } catch (const tardis::Error& e) {
        return fail(e.status(), e.what());
    } catch (const std::bad_alloc&) {
        return fail(TARDIS_ERROR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception& e) {
        return fail(TARDIS_ERROR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return fail(TARDIS_ERROR_INTERNAL, "internal error: unknown exception");
    }
}

void require(bool ok, const char* what) {
    if (!ok) throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT, what);
}

// The caller's options over the defaults: only the first struct_size bytes (a caller built against an older header
// knows fewer fields; the others keep their defaults).
tardis_multi_options read_multi_options(const tardis_multi_options* given) {
    tardis_multi_options options = tardis::default_multi_options();
    if (!given) return options;
    if (given->struct_size < sizeof(size_t) + sizeof(int))
        throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                            "options.struct_size is " + std::to_string(given->struct_size) +
                                "; initialise the options with tardis_multi_options_init before setting fields");
    std::memcpy(&options, given, std::min(given->struct_size, sizeof options));
    options.struct_size = sizeof options;
    return options;
}

void check_outputs(const tardis_animal* animals, const float* keypoints_xy, const float* scores, int capacity,
                   const int* count) {
    require(count != nullptr, "count is NULL; pass the address of an int to receive the number of animals");
    if (capacity < 0)
        throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                            "capacity " + std::to_string(capacity) + " is negative; pass the number of rows of the "
                                                                     "animals, keypoints_xy and scores arrays");
    require(capacity == 0 || (animals && keypoints_xy && scores),
            "animals, keypoints_xy and scores must not be NULL when capacity > 0");
}

// The last frame's animals into the caller's arrays; *count is set first, so it says how many are needed.
void write_animals(const tardis::MultiAnimalStream& stream, tardis_animal* animals, float* keypoints_xy,
                   float* scores, int capacity, int* count) {
    const tardis::StreamFrame& frame = stream.last();
    const int m = static_cast<int>(frame.poses.poses.size()), k = stream.num_keypoints();
    *count = m;
    if (m > capacity)
        throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                            "frame " + std::to_string(frame.frame_index) + " has " + std::to_string(m) +
                                " animals but capacity is " + std::to_string(capacity) +
                                " (*count says how many); the frame was processed: read it with tardis_multi_results "
                                "and arrays of at least " + std::to_string(m) + " rows");
    for (int i = 0; i < m; ++i) {
        const size_t row = static_cast<size_t>(i);
        const tardis::CropBox& b = frame.poses.boxes[row];
        animals[i].track_id = frame.track_ids[row];
        animals[i].score = static_cast<float>(frame.poses.instance_scores[row]);
        animals[i].box = tardis_box{static_cast<float>(b.cx - b.width / 2), static_cast<float>(b.cy - b.height / 2),
                                    static_cast<float>(b.width), static_cast<float>(b.height)};
        for (int j = 0; j < 2 * k; ++j)
            keypoints_xy[row * 2 * k + j] = static_cast<float>(frame.keypoints[row * 2 * k + j]);
        for (int j = 0; j < k; ++j) scores[row * k + j] = frame.poses.poses.scores[row * k + j];
    }
}

}  // namespace

extern "C" {

const char* tardis_last_error(void) { return g_last_error.c_str(); }

const char* tardis_status_name(tardis_status status) {
    switch (status) {
        case TARDIS_OK: return "TARDIS_OK";
        case TARDIS_ERROR_INVALID_ARGUMENT: return "TARDIS_ERROR_INVALID_ARGUMENT";
        case TARDIS_ERROR_NOT_FOUND: return "TARDIS_ERROR_NOT_FOUND";
        case TARDIS_ERROR_BAD_METADATA: return "TARDIS_ERROR_BAD_METADATA";
        case TARDIS_ERROR_BACKEND_UNAVAILABLE: return "TARDIS_ERROR_BACKEND_UNAVAILABLE";
        case TARDIS_ERROR_MODEL: return "TARDIS_ERROR_MODEL";
        case TARDIS_ERROR_INFERENCE: return "TARDIS_ERROR_INFERENCE";
        case TARDIS_ERROR_UNSUPPORTED: return "TARDIS_ERROR_UNSUPPORTED";
        case TARDIS_ERROR_OUT_OF_MEMORY: return "TARDIS_ERROR_OUT_OF_MEMORY";
        case TARDIS_ERROR_INTERNAL: return "TARDIS_ERROR_INTERNAL";
        default: return "TARDIS_ERROR_UNKNOWN_STATUS";
    }
}

const char* tardis_version(void) {
#define TARDIS_STR2(x) #x
#define TARDIS_STR(x) TARDIS_STR2(x)
    return TARDIS_STR(TARDIS_EDGE_VERSION_MAJOR) "." TARDIS_STR(TARDIS_EDGE_VERSION_MINOR) "." TARDIS_STR(
        TARDIS_EDGE_VERSION_PATCH);
#undef TARDIS_STR
#undef TARDIS_STR2
}

int tardis_backend_available(tardis_backend backend) {
    const int opencv =
#if defined(TARDIS_HAVE_OPENCV_DNN)
        1;
#else
        0;
#endif
    const int tensorrt =
#if defined(TARDIS_HAVE_TENSORRT)
        1;
#else
        0;
#endif
    switch (backend) {
        case TARDIS_BACKEND_AUTO: return opencv || tensorrt;
        case TARDIS_BACKEND_OPENCV_DNN: return opencv;
        case TARDIS_BACKEND_TENSORRT: return tensorrt;
        default: return 0;
    }
}

const char* tardis_backend_name(tardis_backend backend) {
    switch (backend) {
        case TARDIS_BACKEND_AUTO: return "auto";
        case TARDIS_BACKEND_OPENCV_DNN: return "opencv-dnn";
        case TARDIS_BACKEND_TENSORRT: return "tensorrt";
        default: return "unknown";
    }
}

void tardis_runner_options_init(tardis_runner_options* options) {
    if (!options) return;
    options->backend = TARDIS_BACKEND_AUTO;
    options->precision = nullptr;
    options->engine_path = nullptr;
    options->cuda_device = 0;
}

tardis_status tardis_runner_create(const char* artifact_dir, const tardis_runner_options* options,
                                   tardis_runner** out_runner) {
    if (out_runner) *out_runner = nullptr;
    return guarded([&] {
        require(out_runner != nullptr, "out_runner is NULL; pass the address of a tardis_runner* to receive it");
        require(artifact_dir != nullptr, "artifact_dir is NULL; pass the folder tardis-export wrote");
        tardis_runner_options defaults;
        tardis_runner_options_init(&defaults);
        *out_runner = new tardis_runner(tardis::Runner(artifact_dir, options ? *options : defaults));
    });
}

void tardis_runner_destroy(tardis_runner* runner) { delete runner; }

int tardis_runner_num_keypoints(const tardis_runner* runner) {
    return runner ? runner->impl.metadata().num_keypoints() : 0;
}

const char* tardis_runner_keypoint_name(const tardis_runner* runner, int index) {
    if (!runner || index < 0 || index >= runner->impl.metadata().num_keypoints()) return nullptr;
    return runner->impl.metadata().keypoint_names[static_cast<size_t>(index)].c_str();
}

tardis_backend tardis_runner_backend(const tardis_runner* runner) {
    return runner ? runner->impl.backend_kind() : TARDIS_BACKEND_AUTO;
}

tardis_status tardis_runner_run(tardis_runner* runner, const tardis_image* image, const tardis_box* box,
                                float* keypoints_xy, float* scores) {
    return guarded([&] {
        require(runner != nullptr, "runner is NULL; create one with tardis_runner_create");
        tardis::validate_image(image);
        runner->impl.run(*image, box, 1, keypoints_xy, scores);
    });
}

tardis_status tardis_runner_run_boxes(tardis_runner* runner, const tardis_image* image, const tardis_box* boxes,
                                      int num_boxes, float* keypoints_xy, float* scores) {
    return guarded([&] {
        require(runner != nullptr, "runner is NULL; create one with tardis_runner_create");
        require(boxes != nullptr, "boxes is NULL; use tardis_runner_run(..., NULL, ...) for the whole frame");
        tardis::validate_image(image);
        runner->impl.run(*image, boxes, num_boxes, keypoints_xy, scores);
    });
}

void tardis_multi_options_init(tardis_multi_options* options) {
    if (options) *options = tardis::default_multi_options();
}

int tardis_runner_has_finder(const tardis_runner* runner) {
    return runner && runner->impl.metadata().finder ? 1 : 0;
}

tardis_status tardis_multi_create(tardis_runner* runner, const tardis_multi_options* options,
                                  tardis_multi** out_multi) {
    if (out_multi) *out_multi = nullptr;
    return guarded([&] {
        require(out_multi != nullptr, "out_multi is NULL; pass the address of a tardis_multi* to receive it");
        require(runner != nullptr, "runner is NULL; create one with tardis_runner_create");
        *out_multi = new tardis_multi(runner->impl, read_multi_options(options));
    });
}

void tardis_multi_destroy(tardis_multi* multi) { delete multi; }

tardis_status tardis_multi_reset(tardis_multi* multi) {
    return guarded([&] {
        require(multi != nullptr, "multi is NULL; create one with tardis_multi_create");
        multi->stream.reset();
    });
}

int tardis_multi_max_animals(const tardis_multi* multi) { return multi ? multi->stream.max_animals() : 0; }

tardis_status tardis_multi_process(tardis_multi* multi, const tardis_image* image, int frame_index,
                                   tardis_animal* animals, float* keypoints_xy, float* scores, int capacity,
                                   int* count) {
    if (count) *count = 0;
    return guarded([&] {
        require(multi != nullptr, "multi is NULL; create one with tardis_multi_create");
        check_outputs(animals, keypoints_xy, scores, capacity, count);
        tardis::validate_image(image);
        multi->stream.process(tardis::image_view(*image), frame_index);
        write_animals(multi->stream, animals, keypoints_xy, scores, capacity, count);
    });
}

tardis_status tardis_multi_results(const tardis_multi* multi, tardis_animal* animals, float* keypoints_xy,
                                   float* scores, int capacity, int* count) {
    if (count) *count = 0;
    return guarded([&] {
        require(multi != nullptr, "multi is NULL; create one with tardis_multi_create");
        check_outputs(animals, keypoints_xy, scores, capacity, count);
        write_animals(multi->stream, animals, keypoints_xy, scores, capacity, count);
    });
}

tardis_status tardis_multi_last_frame(const tardis_multi* multi, tardis_multi_frame* info) {
    return guarded([&] {
        require(multi != nullptr, "multi is NULL; create one with tardis_multi_create");
        require(info != nullptr, "info is NULL; pass the address of a tardis_multi_frame");
        const tardis::StreamFrame& frame = multi->stream.last();
        *info = tardis_multi_frame{};
        if (!multi->stream.has_frame()) return;
        info->frame_index = frame.frame_index;
        info->detected = frame.poses.detected ? 1 : 0;
        info->num_animals = static_cast<int>(frame.poses.poses.size());
        info->num_tracked = static_cast<int>(std::count_if(frame.track_ids.begin(), frame.track_ids.end(),
                                                           [](int id) { return id >= 0; }));
        info->num_dropped = frame.dropped;
    });
}

tardis_status tardis_crop_affine(int image_width, int image_height, const tardis_box* box, float padding,
                                 int input_width, int input_height, double affine[6]) {
    return guarded([&] {
        require(affine != nullptr, "affine is NULL; pass a double[6]");
        if (image_width <= 0 || image_height <= 0 || input_width <= 0 || input_height <= 0)
            throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                                "image size " + std::to_string(image_width) + "x" + std::to_string(image_height) +
                                    " and input size " + std::to_string(input_width) + "x" +
                                    std::to_string(input_height) + " must be positive");
        if (box && !(std::isfinite(padding) && padding > 0))
            throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                                "padding " + std::to_string(padding) + " must be a positive number (model.json: 1.25)");
        const tardis::CropBox crop =
            box ? tardis::box_from_xywh(box->x, box->y, box->width, box->height, input_width, input_height, padding)
                : tardis::box_from_image(image_width, image_height, input_width, input_height);
        const tardis::Affine a = tardis::crop_affine(crop, input_width, input_height);
        for (int i = 0; i < 6; ++i) affine[i] = a.m[i];
    });
}

tardis_status tardis_warp_affine(const tardis_image* src, const double affine[6], int out_width, int out_height,
                                 unsigned char* out, size_t out_stride_bytes) {
    return guarded([&] {
        tardis::validate_image(src);
        require(affine != nullptr, "affine is NULL; pass the double[6] from tardis_crop_affine");
        require(out != nullptr, "out is NULL");
        if (out_width <= 0 || out_height <= 0)
            throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT, "output size " + std::to_string(out_width) + "x" +
                                                                   std::to_string(out_height) + " must be positive");
        if (out_stride_bytes < 3 * static_cast<size_t>(out_width))
            throw tardis::Error(TARDIS_ERROR_INVALID_ARGUMENT,
                                "output stride " + std::to_string(out_stride_bytes) +
                                    " bytes is smaller than 3 * width = " + std::to_string(3 * out_width));
        tardis::Affine a{};
        for (int i = 0; i < 6; ++i) a.m[i] = affine[i];
        tardis::warp_affine_u8(src->data, src->width, src->height, src->stride_bytes, a, out_width, out_height, out,
                               out_stride_bytes);
    });
}

tardis_status tardis_decode_heatmaps(const float* heatmaps, int n, int k, int height, int width,
                                     tardis_decode_method method, float beta, float* keypoints_xy, float* scores) {
    return guarded([&] {
        require(heatmaps != nullptr && keypoints_xy != nullptr && scores != nullptr,
                "heatmaps, keypoints_xy and scores must not be NULL");
        tardis::decode_heatmaps_cpu(heatmaps, n, k, height, width, method, beta, keypoints_xy, scores);
    });
}

}  // extern "C"
