// CUDA pre-processing and heatmap decoding (cuda_kernels.cu): the same arithmetic as the CPU code
// (kernels_common.hpp), for a TensorRT pipeline that keeps images and heatmaps on the GPU. Host functions; every
// pointer argument is device memory unless named host_*. `stream` is a cudaStream_t (0: the default stream).
// Failures throw tardis::Error(TARDIS_ERROR_INFERENCE) with CUDA's message.
#pragma once

#include <cstddef>
#include <cstdint>

#include "geometry.hpp"
#include "tardis_edge.h"

namespace tardis::cuda {

// Number of CUDA devices this process can use (0 without a driver or GPU; never throws).
int device_count();

// Warp one crop of `src` (H, W, 3 uint8, rows `stride` bytes apart) through `image_to_input` into planar float32
// (3, input_h, input_w) values 0..255, channels reversed when `swap_rb`: the same pixels as the CPU warp.
void warp_to_planar(const uint8_t* src, int width, int height, size_t stride, const Affine& image_to_input,
                    int input_w, int input_h, bool swap_rb, float* planar, void* stream);

// Decode heatmaps (N, K, H, W) into keypoints (N, K, 2) heatmap pixels and scores (N, K), as
// decode_heatmaps_cpu does, for argmax, msra and soft-argmax. DARK throws Error(TARDIS_ERROR_UNSUPPORTED)
// (decode it on the CPU).
void decode_heatmaps(const float* heatmaps, int n, int k, int height, int width, tardis_decode_method method,
                     float beta, float* keypoints_xy, float* scores, void* stream);

}  // namespace tardis::cuda
