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
    artifact_dir_ = artifact_dir;
    precision_ = options.precision ? options.precision : "fp32";
    cuda_device_ = options.cuda_device;
    const std::string& precision = precision_;
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

ImageView image_view(const tardis_image& image) {
    return ImageView{image.data, image.width, image.height, image.stride_bytes, image.format == TARDIS_PIXEL_BGR8};
}

void Runner::run(const tardis_image& image, const tardis_box* boxes, int num_boxes, float* keypoints_xy,
                 float* scores) {
    validate_image(&image);
    if (num_boxes < 1)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "num_boxes is " + std::to_string(num_boxes) + "; pass at least 1");
    if (!keypoints_xy || !scores) throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "keypoints_xy and scores must not be NULL");
    boxes_.clear();
    for (int i = 0; i < num_boxes; ++i)
        boxes_.push_back(boxes ? box_from_xywh(boxes[i].x, boxes[i].y, boxes[i].width, boxes[i].height,
                                               meta_.input_width, meta_.input_height, meta_.padding)
                               : box_from_image(image.width, image.height, meta_.input_width, meta_.input_height));
    run_crops(image_view(image), boxes_, keypoints_xy, scores);
}

namespace {

// Crop-input keypoints -> image pixels through each crop's inverse affine, in double (as predict.apply_affines);
// rows with score <= 0 are NaN.
template <typename T>
void to_image_pixels(const std::vector<Affine>& crops, const float* keypoints_input, const float* scores, int k,
                     T* keypoints_xy) {
    for (size_t i = 0; i < crops.size(); ++i) {
        const Affine input_to_image = invert_affine(crops[i]);
        for (int j = 0; j < k; ++j) {
            const size_t row = i * k + j;
            T* kp = keypoints_xy + 2 * row;
            if (!(scores[row] > 0)) {
                kp[0] = kp[1] = std::numeric_limits<T>::quiet_NaN();
                continue;
            }
            double x, y;
            apply_affine(input_to_image, keypoints_input[2 * row], keypoints_input[2 * row + 1], &x, &y);
            kp[0] = static_cast<T>(x);
            kp[1] = static_cast<T>(y);
        }
    }
}

}  // namespace

void Runner::infer(const ImageView& image, const std::vector<CropBox>& boxes, float* keypoints_input,
                   float* scores) {
    crops_.clear();
    for (const CropBox& box : boxes) crops_.push_back(crop_affine(box, meta_.input_width, meta_.input_height));
    backend_->run(image, crops_, keypoints_input, scores);
}

void Runner::run_crops(const ImageView& image, const std::vector<CropBox>& boxes, float* keypoints_xy,
                       float* scores) {
    infer(image, boxes, keypoints_xy, scores);  // in place: each row is read before it is written
    to_image_pixels(crops_, keypoints_xy, scores, meta_.num_keypoints(), keypoints_xy);
}

void Runner::run_crops(const ImageView& image, const std::vector<CropBox>& boxes, double* keypoints_xy,
                       float* scores) {
    keypoints_input_.resize(boxes.size() * 2 * static_cast<size_t>(meta_.num_keypoints()));
    infer(image, boxes, keypoints_input_.data(), scores);
    to_image_pixels(crops_, keypoints_input_.data(), scores, meta_.num_keypoints(), keypoints_xy);
}

std::unique_ptr<Backend> Runner::make_finder_backend(const std::string& precision) const {
    if (!meta_.finder)
        throw Error(TARDIS_ERROR_UNSUPPORTED,
                    meta_.source + " has no animal finder (no \"finder\" section): the model was trained on "
                                   "single-animal data; use tardis_runner_run with boxes, or train on multi-animal "
                                   "labels and re-export");
    const FinderSpec& finder = *meta_.finder;
    const tardis_backend kind = backend_->kind();
    std::string key = precision.empty() ? precision_ : precision;
    if (key == "int8") key = kind == TARDIS_BACKEND_TENSORRT ? "int8_qdq" : "int8_cpu";
    auto it = finder.models.find(key);
    if (it == finder.models.end())
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, meta_.source + " has no " + key + " finder graph (finder.models: " +
                                                       finder.model_keys() + "); pick another precision");
    // The finder is a heatmap graph of 3 channels on an S x S whole-frame input: describe it as one.
    Metadata m;
    m.source = meta_.source + " (finder)";
    m.keypoint_names = {"centre", "width", "height"};
    m.input_width = m.input_height = finder.input_size;
    m.heatmap_width = m.heatmap_height = finder.output_size();
    m.color = meta_.color;
    m.models.emplace(key, it->second);
    if (kind == TARDIS_BACKEND_TENSORRT) {
        const fs::path engine = it->second.engine.empty() ? fs::path(it->second.file).replace_extension(".engine")
                                                          : fs::path(it->second.engine);
        return make_tensorrt(m, (fs::path(artifact_dir_) / engine).string(), cuda_device_);
    }
    return make_opencv(m, artifact_dir_, key);
}

}  // namespace tardis
