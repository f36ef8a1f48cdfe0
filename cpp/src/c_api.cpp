// The C boundary: every entry point catches everything, stores the message in a thread-local buffer and returns a
// status. Nothing thrown inside the library leaves it.
#include <cmath>
#include <exception>
#include <new>
#include <string>

#include "decode.hpp"
#include "error.hpp"
#include "geometry.hpp"
#include "runner.hpp"
#include "tardis_edge.h"

struct tardis_runner {
    explicit tardis_runner(tardis::Runner&& r) : impl(std::move(r)) {}
    tardis::Runner impl;
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
