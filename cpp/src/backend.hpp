// Inference backends: each turns crops of one image into keypoints in crop-input pixels. The runner owns the
// geometry around them (boxes, affines, mapping back to image pixels).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "geometry.hpp"
#include "metadata.hpp"
#include "tardis_edge.h"

namespace tardis {

struct ImageView {
    const uint8_t* data;
    int width;
    int height;
    size_t stride;  // bytes between rows
    bool bgr;       // channel order of `data`
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual tardis_backend kind() const = 0;
    // keypoints_input (num_crops, K, 2) in network-input pixels and scores (num_crops, K) for the crops given by
    // image_to_input[i]. Rows with score <= 0 are "not found" (their coordinates are unspecified).
    virtual void run(const ImageView& image, const std::vector<Affine>& image_to_input, float* keypoints_input,
                     float* scores) = 0;
    // The raw output of a heatmap graph for the crops, (num_crops, K, H_hm, W_hm) float32 (the animal finder's
    // centre + size maps); throws Error(UNSUPPORTED) for a graph that decodes inside.
    virtual void run_heatmaps(const ImageView& image, const std::vector<Affine>& image_to_input, float* heatmaps) = 0;
};

// Heatmaps (n, K, H_hm, W_hm) -> keypoints in input pixels (decoded per model.json, times the stride) + scores.
void decode_to_input_pixels(const Metadata& meta, const float* heatmaps, int n, float* keypoints_input, float* scores);

#if defined(TARDIS_HAVE_OPENCV_DNN)
// CPU inference with OpenCV's DNN module: the heatmap graph of `precision` (decoded in C++), else its keypoint graph.
std::unique_ptr<Backend> make_opencv_dnn_backend(const Metadata& meta, const std::string& artifact_dir,
                                                 const std::string& precision);
#endif

#if defined(TARDIS_HAVE_TENSORRT)
// GPU inference with a serialized TensorRT engine (built by trtexec from one of the artifact's ONNX graphs).
std::unique_ptr<Backend> make_tensorrt_backend(const Metadata& meta, const std::string& engine_path, int cuda_device);
#endif

}  // namespace tardis
