// CPU heatmap decoding (see decode.hpp). Numerics follow tardis_edge/decode.py: float32 maps, the DARK blur
// accumulated in double (the reference's conv2d sums in float32; both are far inside the 1e-4 px tolerance).
#include "decode.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "error.hpp"
#include "kernels_common.hpp"

namespace tardis {

namespace {

constexpr int kDarkBlurKernel = 11;  // decode.DARK_BLUR_KERNEL

// Index of the first maximum in row-major order (a NaN wins, as torch.max propagates it) and its value.
void argmax_map(const float* map, int size, int* index, float* value) {
    int best = 0;
    float best_value = map[0];
    if (!std::isnan(best_value)) {
        for (int i = 1; i < size; ++i) {
            if (std::isnan(map[i])) {
                best = i;
                best_value = map[i];
                break;
            }
            if (map[i] > best_value) {
                best = i;
                best_value = map[i];
            }
        }
    }
    *index = best;
    *value = best_value;
}

// cv2.getGaussianKernel(size, 0): sigma from the size, computed in double, normalised, then float.
std::vector<float> gaussian_kernel_1d(int size) {
    const double sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8;
    std::vector<double> k(static_cast<size_t>(size));
    double sum = 0.0;
    for (int i = 0; i < size; ++i) {
        const double c = i - (size - 1) / 2.0;
        k[static_cast<size_t>(i)] = std::exp(-(c * c) / (2 * sigma * sigma));
        sum += k[static_cast<size_t>(i)];
    }
    std::vector<float> out(static_cast<size_t>(size));
    for (int i = 0; i < size; ++i) out[static_cast<size_t>(i)] = static_cast<float>(k[static_cast<size_t>(i)] / sum);
    return out;
}

// decode.dark_modulate for one map: zero-padded separable Gaussian blur, rescaled to the original maximum, log.
void dark_modulate(const float* map, int height, int width, const std::vector<float>& kernel, std::vector<float>& tmp,
                   std::vector<float>& out) {
    const int size = static_cast<int>(kernel.size());
    const int pad = size / 2;
    tmp.assign(static_cast<size_t>(height) * width, 0.0f);
    out.assign(static_cast<size_t>(height) * width, 0.0f);
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            double acc = 0.0;
            for (int j = 0; j < size; ++j) {
                const int xx = x + j - pad;
                if (xx >= 0 && xx < width) acc += static_cast<double>(kernel[j]) * map[y * width + xx];
            }
            tmp[static_cast<size_t>(y) * width + x] = static_cast<float>(acc);
        }
    }
    float orig_max = map[0], blurred_max = -INFINITY;
    for (int i = 1; i < height * width; ++i) orig_max = std::fmax(orig_max, map[i]);
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            double acc = 0.0;
            for (int j = 0; j < size; ++j) {
                const int yy = y + j - pad;
                if (yy >= 0 && yy < height) acc += static_cast<double>(kernel[j]) * tmp[static_cast<size_t>(yy) * width + x];
            }
            out[static_cast<size_t>(y) * width + x] = static_cast<float>(acc);
            blurred_max = std::fmax(blurred_max, static_cast<float>(acc));
        }
    }
    const float ratio = orig_max / blurred_max;
    for (float& v : out) v = std::log(std::fmax(v * ratio, 1e-10f));
}

// decode._dark_refine: one Newton step on the log map at the integer peak, only where 1 < x < W-2, 1 < y < H-2
// and the Hessian determinant is not exactly 0.
void dark_refine(const float* logm, int height, int width, int px, int py, float* kx, float* ky) {
    auto at = [&](int dx, int dy) { return clamped_at(logm, width, height, px + dx, py + dy); };
    const float center = at(0, 0);
    const float gx = 0.5f * (at(1, 0) - at(-1, 0));
    const float gy = 0.5f * (at(0, 1) - at(0, -1));
    const float dxx = 0.25f * (at(2, 0) - 2 * center + at(-2, 0));
    const float dyy = 0.25f * (at(0, 2) - 2 * center + at(0, -2));
    const float dxy = 0.25f * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1));
    const float det = dxx * dyy - dxy * dxy;
    *kx = static_cast<float>(px);
    *ky = static_cast<float>(py);
    if (px > 1 && px < width - 2 && py > 1 && py < height - 2 && det != 0.0f) {
        // offset = -H^-1 g with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
        *kx += -(dyy * gx - dxy * gy) / det;
        *ky += -(-dxy * gx + dxx * gy) / det;
    }
}

// decode.soft_argmax for one map: max subtraction, weights summed once, coordinates centred on the map.
void soft_argmax_map(const float* map, int height, int width, float beta, float* kx, float* ky) {
    float max_logit = -INFINITY;
    for (int i = 0; i < height * width; ++i) max_logit = std::fmax(max_logit, map[i] * beta);
    const double cx = (width - 1) / 2.0, cy = (height - 1) / 2.0;
    double total = 0.0, sum_x = 0.0, sum_y = 0.0;
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            const double w = std::exp(map[y * width + x] * beta - max_logit);
            total += w;
            sum_x += w * (x - cx);
            sum_y += w * (y - cy);
        }
    }
    *kx = static_cast<float>(sum_x / total + cx);
    *ky = static_cast<float>(sum_y / total + cy);
}

}  // namespace

const char* decode_method_name(tardis_decode_method method) {
    switch (method) {
        case TARDIS_DECODE_ARGMAX: return "argmax";
        case TARDIS_DECODE_MSRA: return "msra";
        case TARDIS_DECODE_DARK: return "dark";
        case TARDIS_DECODE_SOFT_ARGMAX: return "soft_argmax";
        default: return "unknown";
    }
}

void decode_heatmaps_cpu(const float* heatmaps, int n, int k, int height, int width, tardis_decode_method method,
                         float beta, float* keypoints_xy, float* scores) {
    if (n <= 0 || k <= 0 || height <= 0 || width <= 0)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "heatmaps must be (N, K, H, W) with positive sizes; got (" +
                                                       std::to_string(n) + ", " + std::to_string(k) + ", " +
                                                       std::to_string(height) + ", " + std::to_string(width) + ")");
    if (method != TARDIS_DECODE_ARGMAX && method != TARDIS_DECODE_MSRA && method != TARDIS_DECODE_DARK &&
        method != TARDIS_DECODE_SOFT_ARGMAX)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "unknown decode method " + std::to_string(static_cast<int>(method)) +
                                                       "; use a tardis_decode_method value");
    if (method == TARDIS_DECODE_SOFT_ARGMAX && !(std::isfinite(beta) && beta > 0))
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "soft-argmax beta must be a positive finite number, got " + std::to_string(beta));
    const size_t plane = static_cast<size_t>(height) * width;
    const std::vector<float> kernel = method == TARDIS_DECODE_DARK ? gaussian_kernel_1d(kDarkBlurKernel)
                                                                    : std::vector<float>();
    std::vector<float> tmp, logm;
    for (size_t m = 0; m < static_cast<size_t>(n) * k; ++m) {
        const float* map = heatmaps + m * plane;
        int index;
        argmax_map(map, static_cast<int>(plane), &index, &scores[m]);
        float* kp = keypoints_xy + 2 * m;
        if (method == TARDIS_DECODE_SOFT_ARGMAX) {
            soft_argmax_map(map, height, width, beta, &kp[0], &kp[1]);
            continue;
        }
        if (!(scores[m] > 0)) {  // invalid row (also NaN)
            kp[0] = kp[1] = -1.0f;
            continue;
        }
        const int px = index % width, py = index / width;
        if (method == TARDIS_DECODE_ARGMAX) {
            kp[0] = static_cast<float>(px);
            kp[1] = static_cast<float>(py);
        } else if (method == TARDIS_DECODE_MSRA) {
            msra_refine(map, width, height, px, py, &kp[0], &kp[1]);
        } else {
            dark_modulate(map, height, width, kernel, tmp, logm);
            dark_refine(logm.data(), height, width, px, py, &kp[0], &kp[1]);
        }
    }
}

}  // namespace tardis
