// CUDA pre-processing (crop warp -> planar float input) and heatmap decoding (argmax, MSRA, soft-argmax).
// Per-pixel and per-peak arithmetic comes from kernels_common.hpp, shared with the CPU path; this file is built
// with --fmad=false so both sides round the same way.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <string>

#include "cuda_kernels.hpp"
#include "error.hpp"
#include "kernels_common.hpp"

namespace tardis::cuda {

namespace {

constexpr int kDecodeThreads = 256;  // one block per heatmap; 64x64 maps give 16 elements per thread

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw Error(TARDIS_ERROR_INFERENCE, std::string(what) + ": CUDA error " + cudaGetErrorName(status) + " (" +
                                                cudaGetErrorString(status) + ")");
}

// Memory traffic: one read of 4 source pixels (3 bytes each, mostly cached between neighbours) and 3 float writes
// per output pixel; coordinates in double as on the CPU so both pick the same source pixels.
__global__ void warp_to_planar_kernel(const uint8_t* __restrict__ src, int width, int height, size_t stride,
                                      Affine input_to_image, int out_w, int out_h, bool swap_rb,
                                      float* __restrict__ planar) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    const double* m = input_to_image.m;
    const double sx = m[0] * x + m[1] * y + m[2];
    const double sy = m[3] * x + m[4] * y + m[5];
    unsigned char rgb[3];
    sample_bilinear_u8(src, width, height, stride, sx, sy, swap_rb, rgb);
    const size_t plane = static_cast<size_t>(out_w) * out_h;
    const size_t i = static_cast<size_t>(y) * out_w + x;
    planar[i] = rgb[0];
    planar[plane + i] = rgb[1];
    planar[2 * plane + i] = rgb[2];
}

// Does (a, ia) win over (b, ib)? NaN beats numbers (torch.max propagates NaN), then larger value, then smaller
// index: the first maximum in row-major order, as the CPU scan and the reference.
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) {
    const bool na = isnan(a), nb = isnan(b);
    if (na != nb) return na;
    if (!na && a != b) return a > b;
    return ia < ib;
}

// One block per (n, k) map: a strided scan + shared-memory tree reduction for the first maximum, then either the
// MSRA/argmax rule on one thread or a second pass for soft-argmax (max-subtracted weights, centred coordinates,
// float32 sums reduced as a tree).
__global__ void decode_kernel(const float* __restrict__ heatmaps, int height, int width, int method, float beta,
                              float* __restrict__ keypoints, float* __restrict__ scores) {
    __shared__ float s_val[kDecodeThreads];
    __shared__ int s_idx[kDecodeThreads];
    __shared__ float s_sum[3][kDecodeThreads];
    const int tid = threadIdx.x;
    const int size = height * width;
    const float* map = heatmaps + static_cast<size_t>(blockIdx.x) * size;

    float best = -INFINITY;
    int best_i = INT_MAX;
    for (int i = tid; i < size; i += kDecodeThreads) {
        const float v = map[i];
        if (better(v, i, best, best_i)) {
            best = v;
            best_i = i;
        }
    }
    s_val[tid] = best;
    s_idx[tid] = best_i;
    __syncthreads();
    for (int s = kDecodeThreads / 2; s > 0; s >>= 1) {
        if (tid < s && better(s_val[tid + s], s_idx[tid + s], s_val[tid], s_idx[tid])) {
            s_val[tid] = s_val[tid + s];
            s_idx[tid] = s_idx[tid + s];
        }
        __syncthreads();
    }
    best = s_val[0];
    best_i = s_idx[0];
    float* kp = keypoints + 2 * static_cast<size_t>(blockIdx.x);

    if (method == TARDIS_DECODE_SOFT_ARGMAX) {
        const float max_logit = best * beta;  // = max(map * beta) for beta > 0 (rounding is monotone)
        const float cx = (width - 1) * 0.5f, cy = (height - 1) * 0.5f;
        float total = 0.0f, sum_x = 0.0f, sum_y = 0.0f;
        for (int i = tid; i < size; i += kDecodeThreads) {
            const float w = expf(map[i] * beta - max_logit);
            total += w;
            sum_x += w * (static_cast<float>(i % width) - cx);
            sum_y += w * (static_cast<float>(i / width) - cy);
        }
        s_sum[0][tid] = total;
        s_sum[1][tid] = sum_x;
        s_sum[2][tid] = sum_y;
        __syncthreads();
        for (int s = kDecodeThreads / 2; s > 0; s >>= 1) {
            if (tid < s) {
                s_sum[0][tid] += s_sum[0][tid + s];
                s_sum[1][tid] += s_sum[1][tid + s];
                s_sum[2][tid] += s_sum[2][tid + s];
            }
            __syncthreads();
        }
        if (tid == 0) {
            kp[0] = s_sum[1][0] / s_sum[0][0] + cx;
            kp[1] = s_sum[2][0] / s_sum[0][0] + cy;
            scores[blockIdx.x] = best;
        }
        return;
    }
    if (tid != 0) return;
    scores[blockIdx.x] = best;
    if (!(best > 0.0f)) {  // invalid row (also NaN)
        kp[0] = kp[1] = -1.0f;
        return;
    }
    const int px = best_i % width, py = best_i / width;
    if (method == TARDIS_DECODE_MSRA) {
        msra_refine(map, width, height, px, py, &kp[0], &kp[1]);
    } else {
        kp[0] = static_cast<float>(px);
        kp[1] = static_cast<float>(py);
    }
}

}  // namespace

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error for later calls
        return 0;
    }
    return count;
}

void warp_to_planar(const uint8_t* src, int width, int height, size_t stride, const Affine& image_to_input,
                    int input_w, int input_h, bool swap_rb, float* planar, void* stream) {
    const Affine input_to_image = invert_affine(image_to_input);  // output pixel -> source pixel
    const dim3 block(32, 8);
    const dim3 grid((input_w + block.x - 1) / block.x, (input_h + block.y - 1) / block.y);
    warp_to_planar_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
        src, width, height, stride, input_to_image, input_w, input_h, swap_rb, planar);
    check(cudaGetLastError(), "launching the crop warp kernel");
}

void decode_heatmaps(const float* heatmaps, int n, int k, int height, int width, tardis_decode_method method,
                     float beta, float* keypoints_xy, float* scores, void* stream) {
    if (n <= 0 || k <= 0 || height <= 0 || width <= 0)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "heatmaps must be (N, K, H, W) with positive sizes; got (" +
                                                       std::to_string(n) + ", " + std::to_string(k) + ", " +
                                                       std::to_string(height) + ", " + std::to_string(width) + ")");
    if (method == TARDIS_DECODE_DARK)
        throw Error(TARDIS_ERROR_UNSUPPORTED, "DARK decoding has no CUDA kernel; decode these heatmaps on the CPU");
    if (method != TARDIS_DECODE_ARGMAX && method != TARDIS_DECODE_MSRA && method != TARDIS_DECODE_SOFT_ARGMAX)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "unknown decode method " + std::to_string(static_cast<int>(method)));
    if (method == TARDIS_DECODE_SOFT_ARGMAX && !(std::isfinite(beta) && beta > 0))
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "soft-argmax beta must be a positive finite number, got " + std::to_string(beta));
    decode_kernel<<<n * k, kDecodeThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        heatmaps, height, width, static_cast<int>(method), beta, keypoints_xy, scores);
    check(cudaGetLastError(), "launching the heatmap decode kernel");
}

}  // namespace tardis::cuda
