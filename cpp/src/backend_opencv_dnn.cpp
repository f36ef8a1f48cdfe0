// CPU inference through OpenCV's DNN module. It runs the artifact's heatmap graph and decodes in C++ (OpenCV 4.6
// cannot import every op of the in-graph decode); it falls back to the keypoint graph only when the artifact has
// no heatmap graph for the requested precision.
#include <algorithm>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <string>
#include <vector>

#include "backend.hpp"
#include "error.hpp"

namespace tardis {

namespace fs = std::filesystem;

namespace {

class OpenCvDnnBackend final : public Backend {
public:
    OpenCvDnnBackend(const Metadata& meta, const std::string& artifact_dir, const std::string& precision)
        : meta_(meta) {
        const ModelEntry* entry = meta.heatmap_model(precision);
        heatmaps_ = entry != nullptr;
        if (!entry) entry = meta.keypoint_model(precision);
        if (!entry)
            throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "precision \"" + precision + "\" has no ONNX graph in " +
                                                           meta.source + " (models: " + meta.model_keys() + ")");
        const fs::path path = fs::path(artifact_dir) / entry->file;
        std::error_code ec;
        if (!fs::exists(path, ec))
            throw Error(TARDIS_ERROR_NOT_FOUND, path.string() + " not found, but " + meta.source + " lists it as models[\"" +
                                                    entry->key + "\"]; copy the whole artifact folder");
        try {
            net_ = cv::dnn::readNetFromONNX(path.string());
        } catch (const cv::Exception& e) {
            throw Error(TARDIS_ERROR_MODEL, "OpenCV " CV_VERSION " cannot import " + path.string() + ": " + e.what() +
                                                " (OpenCV's ONNX importer lacks some ops and patterns; see \"OpenCV "
                                                "DNN and ONNX\" in cpp/README.md)");
        }
        if (net_.empty()) throw Error(TARDIS_ERROR_MODEL, "OpenCV " CV_VERSION " imported an empty net from " + path.string());
        net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
        net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
        output_names_ = heatmaps_ ? std::vector<std::string>{kOutputHeatmaps}
                                  : std::vector<std::string>{kOutputKeypoints, kOutputScores};
        const std::vector<std::string> have = net_.getUnconnectedOutLayersNames();
        for (const auto& name : output_names_) {
            bool found = false;
            for (const auto& h : have) found = found || h == name;
            if (!found) {
                std::string list;
                for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
                throw Error(TARDIS_ERROR_MODEL, path.string() + " has no output \"" + name + "\" (outputs: " + list +
                                                    "); was it written by tardis-export?");
            }
        }
        model_path_ = path.string();
    }

    tardis_backend kind() const override { return TARDIS_BACKEND_OPENCV_DNN; }

    void run(const ImageView& image, const std::vector<Affine>& image_to_input, float* keypoints_input,
             float* scores) override {
        const int k = meta_.num_keypoints();
        // One crop per forward: exported graphs may have a fixed batch of 1, and a CPU gains nothing from batching.
        for (size_t i = 0; i < image_to_input.size(); ++i) {
            std::vector<cv::Mat>& outputs = forward(image, image_to_input[i]);
            float* kp = keypoints_input + i * k * 2;
            float* sc = scores + i * k;
            if (heatmaps_) {
                const cv::Mat& hm = contiguous(outputs[0], heatmap_floats(), kOutputHeatmaps);
                decode_to_input_pixels(meta_, hm.ptr<float>(), 1, kp, sc);
            } else {
                const cv::Mat& kps = contiguous(outputs[0], static_cast<size_t>(k) * 2, kOutputKeypoints);
                const cv::Mat& s = contiguous(outputs[1], static_cast<size_t>(k), kOutputScores);
                std::copy(kps.ptr<float>(), kps.ptr<float>() + 2 * k, kp);
                std::copy(s.ptr<float>(), s.ptr<float>() + k, sc);
            }
        }
    }

    void run_heatmaps(const ImageView& image, const std::vector<Affine>& image_to_input, float* heatmaps) override {
        if (!heatmaps_)
            throw Error(TARDIS_ERROR_UNSUPPORTED, model_path_ + " decodes inside the graph; raw heatmaps need a graph "
                                                                "with the output \"heatmaps\"");
        const size_t floats = heatmap_floats();
        for (size_t i = 0; i < image_to_input.size(); ++i) {
            const cv::Mat& hm = contiguous(forward(image, image_to_input[i])[0], floats, kOutputHeatmaps);
            std::copy(hm.ptr<float>(), hm.ptr<float>() + floats, heatmaps + i * floats);
        }
    }

private:
    size_t heatmap_floats() const {
        return static_cast<size_t>(meta_.num_keypoints()) * meta_.heatmap_height * meta_.heatmap_width;
    }

    // Warp one crop into the graph's input and run it; the outputs of output_names_ (valid until the next call).
    std::vector<cv::Mat>& forward(const ImageView& image, const Affine& image_to_input) {
        const int w = meta_.input_width, h = meta_.input_height;
        const bool swap_rb = image.bgr != (meta_.color == "BGR");
        crop_.resize(static_cast<size_t>(w) * h * 3);
        input_.resize(static_cast<size_t>(w) * h * 3);
        warp_affine_u8(image.data, image.width, image.height, image.stride, image_to_input, w, h, crop_.data(),
                       3 * static_cast<size_t>(w), swap_rb);
        interleaved_to_planar(crop_.data(), w, h, input_.data());
        const int shape[4] = {1, 3, h, w};
        cv::Mat blob(4, shape, CV_32F, input_.data());  // (1, 3, H, W), wraps input_
        try {
            net_.setInput(blob, kInputName);
            net_.forward(outputs_, output_names_);
        } catch (const cv::Exception& e) {
            throw Error(TARDIS_ERROR_INFERENCE, "OpenCV DNN failed on " + model_path_ + ": " + e.what());
        }
        return outputs_;
    }

    // Check an output's size against model.json (K keypoints, heatmap size) and make it contiguous float32.
    const cv::Mat& contiguous(cv::Mat& m, size_t expected, const char* name) {
        if (m.type() != CV_32F || m.total() * static_cast<size_t>(m.channels()) != expected)
            throw Error(TARDIS_ERROR_MODEL, model_path_ + ": output \"" + name + "\" has " +
                                                std::to_string(m.total() * m.channels()) + " values of type " +
                                                std::to_string(m.type()) + ", expected " + std::to_string(expected) +
                                                " float32 for the sizes in " + meta_.source);
        if (!m.isContinuous()) m = m.clone();
        return m;
    }

    Metadata meta_;
    cv::dnn::Net net_;
    bool heatmaps_ = false;
    std::vector<std::string> output_names_;
    std::string model_path_;
    std::vector<uint8_t> crop_;
    std::vector<float> input_;
    std::vector<cv::Mat> outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_opencv_dnn_backend(const Metadata& meta, const std::string& artifact_dir,
                                                 const std::string& precision) {
    try {
        return std::make_unique<OpenCvDnnBackend>(meta, artifact_dir, precision);
    } catch (const cv::Exception& e) {
        throw Error(TARDIS_ERROR_MODEL, std::string("OpenCV " CV_VERSION ": ") + e.what());
    }
}

}  // namespace tardis
