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

private:
    Metadata meta_;
    std::unique_ptr<Backend> backend_;
    std::vector<Affine> crops_;
};

// Check an image descriptor; throws Error(INVALID_ARGUMENT) naming the bad field and value.
void validate_image(const tardis_image* image);

}  // namespace tardis
