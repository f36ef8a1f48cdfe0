// Geometry mirror of tardis_edge/geometry.py (tests/test_preprocess.cpp pins it to the Python module).
#include "geometry.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.hpp"
#include "kernels_common.hpp"

namespace tardis {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

CropBox box_from_center_size(double cx, double cy, double w, double h, int input_w, int input_h, double padding) {
    const double aspect = static_cast<double>(input_w) / static_cast<double>(input_h);
    w = std::max(w, 1.0);
    h = std::max(h, 1.0);
    if (w > aspect * h) {
        h = w / aspect;
    } else {
        w = h * aspect;
    }
    return CropBox{cx, cy, w * padding, h * padding};
}

CropBox box_from_xywh(double x, double y, double w, double h, int input_w, int input_h, double padding) {
    if (!std::isfinite(x) || !std::isfinite(y) || !std::isfinite(w) || !std::isfinite(h) || w < 0 || h < 0)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "bounding box [" + std::to_string(x) + ", " + std::to_string(y) +
                                                       ", " + std::to_string(w) + ", " + std::to_string(h) +
                                                       "] must be finite with non-negative width and height");
    return box_from_center_size(x + w / 2, y + h / 2, w, h, input_w, input_h, padding);
}

CropBox box_from_image(int image_w, int image_h, int input_w, int input_h) {
    return box_from_center_size((image_w - 1) / 2.0, (image_h - 1) / 2.0, static_cast<double>(image_w),
                                static_cast<double>(image_h), input_w, input_h, 1.0);
}

Affine crop_affine(const CropBox& box, int input_w, int input_h, double rotation_deg, bool flip, double shift_x,
                   double shift_y, double scale) {
    const double bw = box.width * scale;
    const double bh = box.height * scale;
    const double cx = box.cx + shift_x * box.width;
    const double cy = box.cy + shift_y * box.height;
    const double sx = input_w / bw;
    const double sy = input_h / bh;
    const double theta = rotation_deg * (kPi / 180.0);  // as Python's math.radians
    const double c = std::cos(theta);
    const double s = std::sin(theta);
    // image -> centred -> rotate (counter-clockwise on screen, y down) -> scale -> input centre
    const double l00 = sx * c, l01 = sx * s, l10 = -sy * s, l11 = sy * c;
    const double ox = (input_w - 1) / 2.0;
    const double oy = (input_h - 1) / 2.0;
    Affine a{{l00, l01, ox - (l00 * cx + l01 * cy), l10, l11, oy - (l10 * cx + l11 * cy)}};
    if (flip) {  // x' = (W_in - 1) - x, in input space
        a.m[0] = -a.m[0];
        a.m[1] = -a.m[1];
        a.m[2] = (input_w - 1.0) - a.m[2];
    }
    return a;
}

Affine invert_affine(const Affine& a) {
    const double det = a.m[0] * a.m[4] - a.m[1] * a.m[3];
    if (det == 0.0 || !std::isfinite(det))
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "crop affine is singular (determinant " + std::to_string(det) +
                                                       "); the crop box must have a positive size");
    const double i00 = a.m[4] / det, i01 = -a.m[1] / det;
    const double i10 = -a.m[3] / det, i11 = a.m[0] / det;
    return Affine{{i00, i01, -(i00 * a.m[2] + i01 * a.m[5]), i10, i11, -(i10 * a.m[2] + i11 * a.m[5])}};
}

void apply_affine(const Affine& a, double x, double y, double* out_x, double* out_y) {
    *out_x = a.m[0] * x + a.m[1] * y + a.m[2];
    *out_y = a.m[3] * x + a.m[4] * y + a.m[5];
}

void warp_affine_u8(const uint8_t* src, int width, int height, size_t stride, const Affine& image_to_out, int out_w,
                    int out_h, uint8_t* out, size_t out_stride, bool swap_rb) {
    const Affine inv = invert_affine(image_to_out);  // output pixel -> source pixel, as warpAffine does
    for (int y = 0; y < out_h; ++y) {
        uint8_t* row = out + static_cast<size_t>(y) * out_stride;
        for (int x = 0; x < out_w; ++x) {
            double sx, sy;
            apply_affine(inv, x, y, &sx, &sy);
            sample_bilinear_u8(src, width, height, stride, sx, sy, swap_rb, row + 3 * static_cast<size_t>(x));
        }
    }
}

void interleaved_to_planar(const uint8_t* crop, int width, int height, float* planar) {
    const size_t plane = static_cast<size_t>(width) * height;
    for (size_t i = 0; i < plane; ++i) {
        planar[i] = crop[3 * i];
        planar[plane + i] = crop[3 * i + 1];
        planar[2 * plane + i] = crop[3 * i + 2];
    }
}

}  // namespace tardis
