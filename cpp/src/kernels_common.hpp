// Per-pixel and per-heatmap arithmetic shared by the CPU code and the CUDA kernels, written once so both compute
// the same thing (the library is built with FP contraction off on both sides, see CMakeLists.txt).
//
// Conventions are tardis_edge/geometry.py's and tardis_edge/decode.py's: pixel centres at integer coordinates,
// keypoints (x, y) in heatmap pixels, ties to the first maximum in row-major order.
#pragma once

#include <math.h>
#include <stddef.h>

#if defined(__CUDACC__)
#define TARDIS_HD __host__ __device__ __forceinline__
#else
#define TARDIS_HD inline
#endif

namespace tardis {

// Bilinear sample of a 3-channel 8-bit image at (x, y) image pixels, constant border 0 (cv2.warpAffine
// INTER_LINEAR + BORDER_CONSTANT: a neighbour outside the image contributes 0). Rounds to nearest, ties to even,
// as OpenCV's saturate_cast does. `swap_rb` writes the channels in reverse order (RGB <-> BGR).
TARDIS_HD void sample_bilinear_u8(const unsigned char* src, int width, int height, size_t stride, double x, double y,
                                  bool swap_rb, unsigned char out[3]) {
    const double x0d = floor(x);
    const double y0d = floor(y);
    const float fx = static_cast<float>(x - x0d);
    const float fy = static_cast<float>(y - y0d);
    // Far outside: every neighbour is border. Checked in double so the int conversion below cannot overflow.
    if (x0d < -1.0 || y0d < -1.0 || x0d >= width || y0d >= height) {
        out[0] = out[1] = out[2] = 0;
        return;
    }
    const int x0 = static_cast<int>(x0d);
    const int y0 = static_cast<int>(y0d);
    const float w[4] = {(1.0f - fx) * (1.0f - fy), fx * (1.0f - fy), (1.0f - fx) * fy, fx * fy};
    const int xs[4] = {x0, x0 + 1, x0, x0 + 1};
    const int ys[4] = {y0, y0, y0 + 1, y0 + 1};
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 4; ++i) {
        if (xs[i] < 0 || ys[i] < 0 || xs[i] >= width || ys[i] >= height) continue;
        const unsigned char* p = src + static_cast<size_t>(ys[i]) * stride + static_cast<size_t>(xs[i]) * 3;
        acc[0] += w[i] * static_cast<float>(p[0]);
        acc[1] += w[i] * static_cast<float>(p[1]);
        acc[2] += w[i] * static_cast<float>(p[2]);
    }
    for (int c = 0; c < 3; ++c) {
        float v = rintf(acc[c]);
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        out[swap_rb ? 2 - c : c] = static_cast<unsigned char>(v);
    }
}

// heatmap[y, x] with x, y clamped inside the map (decode.py's _gather).
TARDIS_HD float clamped_at(const float* map, int width, int height, int x, int y) {
    x = x < 0 ? 0 : (x > width - 1 ? width - 1 : x);
    y = y < 0 ? 0 : (y > height - 1 ? height - 1 : y);
    return map[static_cast<size_t>(y) * width + x];
}

TARDIS_HD float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

// MSRA refinement of an integer peak (px, py): a quarter-pixel step toward the higher neighbour on each axis.
// Border rules of the golden reference: x step only when 1 < x < W-1 and 0 < y < H; y step only when
// 1 < y < H-1 and 0 < x < W; no step where the two neighbours are equal.
TARDIS_HD void msra_refine(const float* map, int width, int height, int px, int py, float* kx, float* ky) {
    const float dx = clamped_at(map, width, height, px + 1, py) - clamped_at(map, width, height, px - 1, py);
    const float dy = clamped_at(map, width, height, px, py + 1) - clamped_at(map, width, height, px, py - 1);
    const bool x_ok = px > 1 && px < width - 1 && py > 0 && py < height;
    const bool y_ok = py > 1 && py < height - 1 && px > 0 && px < width;
    *kx = static_cast<float>(px) + 0.25f * (x_ok ? sign_of(dx) : 0.0f);
    *ky = static_cast<float>(py) + 0.25f * (y_ok ? sign_of(dy) : 0.0f);
}

}  // namespace tardis
