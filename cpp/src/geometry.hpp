// Crop boxes, crop affines and the bilinear warp: a C++ mirror of tardis_edge/geometry.py (which owns the
// conventions) tested against it. Affines are (2, 3) row-major and map image pixels to input pixels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tardis {

struct Affine {
    double m[6];  // [[m0, m1, m2], [m3, m4, m5]]
};

// A crop region in image pixels: centre and size (already padded and aspect-corrected).
struct CropBox {
    double cx;
    double cy;
    double width;
    double height;
};

// geometry.box_from_center_size: aspect-correct to input_w / input_h (grow the short side), then pad.
CropBox box_from_center_size(double cx, double cy, double w, double h, int input_w, int input_h, double padding);
// geometry.box_from_xywh: a COCO box (x, y top-left edge, w, h); throws Error(INVALID_ARGUMENT) if not finite or
// negative.
CropBox box_from_xywh(double x, double y, double w, double h, int input_w, int input_h, double padding);
// geometry.box_from_image: the whole frame, aspect kept, no padding.
CropBox box_from_image(int image_w, int image_h, int input_w, int input_h);

// geometry.crop_affine: image -> input pixels, with the same augmentation parameters.
Affine crop_affine(const CropBox& box, int input_w, int input_h, double rotation_deg = 0.0, bool flip = false,
                   double shift_x = 0.0, double shift_y = 0.0, double scale = 1.0);
// Exact inverse; throws Error(INVALID_ARGUMENT) for a singular affine.
Affine invert_affine(const Affine& a);
void apply_affine(const Affine& a, double x, double y, double* out_x, double* out_y);

// cv2.warpAffine(src, image_to_out, (out_w, out_h), INTER_LINEAR, BORDER_CONSTANT 0) for 3-channel 8-bit images,
// within one grey level. `swap_rb` reverses the channel order of the output.
void warp_affine_u8(const uint8_t* src, int width, int height, size_t stride, const Affine& image_to_out, int out_w,
                    int out_h, uint8_t* out, size_t out_stride, bool swap_rb = false);

// Interleaved 8-bit crop (H, W, 3) -> planar float32 (3, H, W) in [0, 255], as the ONNX input `image` wants.
void interleaved_to_planar(const uint8_t* crop, int width, int height, float* planar);

}  // namespace tardis
