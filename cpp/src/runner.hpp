// The runner behind the C API: metadata + a backend + the geometry between image and crops.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "metadata.hpp"
#include "tardis_edge.h"

namespace tardis {

class Runner {
public:
    // Throws Error: NOT_FOUND, BAD_METADATA, BACKEND_UNAVAILABLE, MODEL, INVALID_ARGUMENT.
    Runner(const std::string& artifact_dir, const tardis_runner_options& options);

    const Metadata& metadata() const { return meta_; }
    tardis_backend backend_kind() const { return backend_->kind(); }

    // keypoints_xy (num_boxes, K, 2) image pixels (NaN where score <= 0), scores (num_boxes, K).
    void run(const tardis_image& image, const tardis_box* boxes, int num_boxes, float* keypoints_xy, float* scores);
    // The same for crop boxes already padded and aspect-corrected (geometry.CropBox, as tardis_edge.predict takes).
    void run_crops(const ImageView& image, const std::vector<CropBox>& boxes, float* keypoints_xy, float* scores);
    // ... with keypoints in double, as tardis_edge.predict maps them (the multi-animal predictor's refine boxes).
    void run_crops(const ImageView& image, const std::vector<CropBox>& boxes, double* keypoints_xy, float* scores);

    // The animal finder's graph on this runner's backend kind: `precision` (empty: the runner's; "int8": int8_cpu
    // on OpenCV DNN, int8_qdq on TensorRT). Throws Error(UNSUPPORTED) when the artifact has no finder.
    std::unique_ptr<Backend> make_finder_backend(const std::string& precision) const;
    const std::string& precision() const { return precision_; }

private:
    void infer(const ImageView& image, const std::vector<CropBox>& boxes, float* keypoints_input, float* scores);

    Metadata meta_;
    std::string artifact_dir_;
    std::string precision_;
    int cuda_device_ = 0;
    std::unique_ptr<Backend> backend_;
    std::vector<Affine> crops_;
    std::vector<CropBox> boxes_;
    std::vector<float> keypoints_input_;
};

// An ImageView of a validated tardis_image.
ImageView image_view(const tardis_image& image);

// Check an image descriptor; throws Error(INVALID_ARGUMENT) naming the bad field and value.
void validate_image(const tardis_image* image);

}  // namespace tardis
