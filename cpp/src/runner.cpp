// Backend selection and the image <-> crop geometry around inference.
#include "runner.hpp"

#include <cmath>
#include <filesystem>
#include <limits>

#include "error.hpp"

namespace tardis {

namespace fs = std::filesystem;

namespace {

const char* kOpenCvHint =
    "configure with -DTARDIS_WITH_OPENCV_DNN=ON and an OpenCV with the dnn module (apt-get install libopencv-dev)";
const char* kTensorRtHint =
    "configure with -DTARDIS_WITH_TENSORRT=ON on a machine with CUDA and TensorRT 10 (JetPack 6), see cpp/README.md";

// The engine a TensorRT runner loads: the explicit path, else models[precision].engine, else <ONNX stem>.engine.
std::string engine_path_for(const Metadata& meta, const std::string& artifact_dir, const std::string& precision,
                            const char* explicit_path) {
    if (explicit_path) return explicit_path;
    auto it = meta.models.find(precision);
    if (it == meta.models.end()) it = meta.models.find(precision + "_heatmaps");
    if (it == meta.models.end())
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "precision \"" + precision + "\" is not in " + meta.source +
                                                       " (models: " + meta.model_keys() + ")");
    const ModelEntry& entry = it->second;
    fs::path engine = entry.engine.empty() ? fs::path(entry.file).replace_extension(".engine") : fs::path(entry.engine);
    return (fs::path(artifact_dir) / engine).string();
}

std::unique_ptr<Backend> make_opencv(const Metadata& meta, const std::string& artifact_dir,
                                     const std::string& precision) {
#if defined(TARDIS_HAVE_OPENCV_DNN)
    return make_opencv_dnn_backend(meta, artifact_dir, precision);
#else
    (void)meta, (void)artifact_dir, (void)precision;
    throw Error(TARDIS_ERROR_BACKEND_UNAVAILABLE,
                std::string("the OpenCV DNN backend was not built into this library; ") + kOpenCvHint);
#endif
}

std::unique_ptr<Backend> make_tensorrt(const Metadata& meta, const std::string& engine_path, int device) {
#if defined(TARDIS_HAVE_TENSORRT)
    return make_tensorrt_backend(meta, engine_path, device);
#else
    (void)meta, (void)engine_path, (void)device;
    throw Error(TARDIS_ERROR_BACKEND_UNAVAILABLE,
                std::string("the TensorRT backend was not built into this library; ") + kTensorRtHint);
#endif
}

}  // namespace

Runner::Runner(const std::string& artifact_dir, const tardis_runner_options& options) {
    std::error_code ec;
    if (!fs::is_directory(artifact_dir, ec))
        throw Error(TARDIS_ERROR_NOT_FOUND, "artifact folder " + artifact_dir +
                                                " not found; pass the folder tardis-export wrote (it holds model.json)");
    meta_ = load_metadata(artifact_dir);
    const std::string precision = options.precision ? options.precision : "fp32";
    switch (options.backend) {
        case TARDIS_BACKEND_OPENCV_DNN: backend_ = make_opencv(meta_, artifact_dir, precision); break;
        case TARDIS_BACKEND_TENSORRT:
            backend_ = make_tensorrt(meta_, engine_path_for(meta_, artifact_dir, precision, options.engine_path),
                                     options.cuda_device);
            break;
        case TARDIS_BACKEND_AUTO: {
            const bool have_trt = tardis_backend_available(TARDIS_BACKEND_TENSORRT);
            const bool have_cv = tardis_backend_available(TARDIS_BACKEND_OPENCV_DNN);
            if (have_trt) {
                const std::string engine = engine_path_for(meta_, artifact_dir, precision, options.engine_path);
                if (fs::exists(engine, ec) || !have_cv) {
                    backend_ = make_tensorrt(meta_, engine, options.cuda_device);
                    break;
                }
            }
            if (!have_cv)
                throw Error(TARDIS_ERROR_BACKEND_UNAVAILABLE,
                            std::string("no inference backend was built into this library; ") + kOpenCvHint +
                                ", or " + kTensorRtHint);
            backend_ = make_opencv(meta_, artifact_dir, precision);
            break;
        }
        default:
            throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                        "unknown backend " + std::to_string(static_cast<int>(options.backend)) +
                            "; use TARDIS_BACKEND_AUTO, TARDIS_BACKEND_OPENCV_DNN or TARDIS_BACKEND_TENSORRT");
    }
}

void validate_image(const tardis_image* image) {
    if (!image) throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "image is NULL");
    if (!image->data) throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "image.data is NULL");
    if (image->width <= 0 || image->height <= 0)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "image size " + std::to_string(image->width) + "x" +
                                                       std::to_string(image->height) + " must be positive");
    const size_t row_bytes = 3 * static_cast<size_t>(image->width);
    if (image->stride_bytes < row_bytes)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "image stride " + std::to_string(image->stride_bytes) + " bytes is smaller than 3 * width = " +
                        std::to_string(row_bytes) + "; pass the distance between rows in bytes");
    if (image->format != TARDIS_PIXEL_RGB8 && image->format != TARDIS_PIXEL_BGR8)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "image format " + std::to_string(static_cast<int>(image->format)) +
                                                       " is not TARDIS_PIXEL_RGB8 or TARDIS_PIXEL_BGR8");
}

void Runner::run(const tardis_image& image, const tardis_box* boxes, int num_boxes, float* keypoints_xy,
                 float* scores) {
    validate_image(&image);
    if (num_boxes < 1)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "num_boxes is " + std::to_string(num_boxes) + "; pass at least 1");
    if (!keypoints_xy || !scores) throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "keypoints_xy and scores must not be NULL");
    crops_.clear();
    for (int i = 0; i < num_boxes; ++i) {
        const CropBox box = boxes ? box_from_xywh(boxes[i].x, boxes[i].y, boxes[i].width, boxes[i].height,
                                                  meta_.input_width, meta_.input_height, meta_.padding)
                                  : box_from_image(image.width, image.height, meta_.input_width, meta_.input_height);
        crops_.push_back(crop_affine(box, meta_.input_width, meta_.input_height));
    }
    const ImageView view{image.data, image.width, image.height, image.stride_bytes, image.format == TARDIS_PIXEL_BGR8};
    backend_->run(view, crops_, keypoints_xy, scores);

    const int k = meta_.num_keypoints();
    for (int i = 0; i < num_boxes; ++i) {
        const Affine input_to_image = invert_affine(crops_[static_cast<size_t>(i)]);
        for (int j = 0; j < k; ++j) {
            const size_t row = static_cast<size_t>(i) * k + j;
            float* kp = keypoints_xy + 2 * row;
            if (!(scores[row] > 0)) {
                kp[0] = kp[1] = std::numeric_limits<float>::quiet_NaN();
                continue;
            }
            double x, y;
            apply_affine(input_to_image, kp[0], kp[1], &x, &y);
            kp[0] = static_cast<float>(x);
            kp[1] = static_cast<float>(y);
        }
    }
}

}  // namespace tardis
