// Pieces every backend shares.
#include <string>

#include "backend.hpp"
#include "decode.hpp"

namespace tardis {

void decode_to_input_pixels(const Metadata& meta, const float* heatmaps, int n, float* keypoints_input, float* scores) {
    const int k = meta.num_keypoints();
    decode_heatmaps_cpu(heatmaps, n, k, meta.heatmap_height, meta.heatmap_width, meta.decode_method,
                        meta.softargmax_beta, keypoints_input, scores);
    // heatmap pixel u sits at input pixel stride * u (tardis_edge.geometry)
    const float stride = meta.stride();
    for (size_t i = 0; i < static_cast<size_t>(n) * k * 2; ++i) keypoints_input[i] *= stride;
}

}  // namespace tardis
