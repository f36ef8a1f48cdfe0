// Heatmap decoding on the CPU: a C++ mirror of tardis_edge/decode.py, pinned to ../shared/golden by the tests.
#pragma once

#include "tardis_edge.h"

namespace tardis {

// Decode heatmaps (N, K, H, W) float32 into keypoints (N, K, 2) (x, y) heatmap pixels and scores (N, K) (maxima).
// argmax / msra / dark: rows with score <= 0 are reported at (-1, -1), as decode.decode_heatmaps does;
// soft-argmax: the expectation for every row, as decode.soft_argmax does. Throws Error(INVALID_ARGUMENT) for
// non-positive sizes or a non-positive beta with soft-argmax.
void decode_heatmaps_cpu(const float* heatmaps, int n, int k, int height, int width, tardis_decode_method method,
                         float beta, float* keypoints_xy, float* scores);

// "argmax", "msra", "dark" or "soft_argmax".
const char* decode_method_name(tardis_decode_method method);

}  // namespace tardis
