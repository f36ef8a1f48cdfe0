// C++ pre-processing against the Python reference on real openfield frames: the crop affine equals
// tardis_edge.geometry.crop_affine (1e-9 relative), and the bilinear warp is within one grey level of the Python crop
// (cv2.warpAffine via geometry.warp_image) and, when OpenCV is built in, of OpenCV C++'s warpAffine (one level for a
// floating-point OpenCV >= 4.11; two, on at most 0.1% of values, for the fixed-point OpenCV 4.6 of Debian 12).
// Row strides and BGR input are checked to give the same pixels.
//
// usage: test_preprocess <data_dir> <reference_dir written by make_reference_crops.py>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "geometry.hpp"
#include "tardis_edge.h"

#if defined(TARDIS_HAVE_OPENCV_IO)
#include <opencv2/imgproc.hpp>
#endif

namespace {

struct Image {
    int width = 0, height = 0;
    std::vector<unsigned char> rgb;  // packed rows
};

Image read_ppm(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string magic;
    Image im;
    int maxval = 0;
    in >> magic >> im.width >> im.height >> maxval;
    in.get();
    if (!in || magic != "P6" || maxval != 255 || im.width <= 0 || im.height <= 0)
        throw std::runtime_error(path + " is not a binary 8-bit PPM");
    im.rgb.resize(static_cast<size_t>(im.width) * im.height * 3);
    in.read(reinterpret_cast<char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size()));
    if (!in) throw std::runtime_error(path + " is truncated");
    return im;
}

struct Diff {
    int max = 0;
    double fraction = 0.0;         // of channel values that differ at all
    double fraction_over_1 = 0.0;  // of channel values that differ by more than one level
};

Diff compare(const unsigned char* a, const unsigned char* b, size_t n) {
    Diff d;
    size_t differ = 0, over_1 = 0;
    for (size_t i = 0; i < n; ++i) {
        const int e = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
        d.max = std::max(d.max, e);
        differ += e != 0;
        over_1 += e > 1;
    }
    d.fraction = static_cast<double>(differ) / static_cast<double>(n);
    d.fraction_over_1 = static_cast<double>(over_1) / static_cast<double>(n);
    return d;
}

struct Case {
    std::string src, crop;
    int in_w, in_h, has_box;
    tardis_box box;
    float padding;
    double rotation;
    int flip;
    double m[6];
};

std::vector<unsigned char> warp(const Image& src, const double m[6], int w, int h, size_t src_stride,
                                tardis_pixel_format format, const std::vector<unsigned char>& pixels) {
    std::vector<unsigned char> out(static_cast<size_t>(w) * h * 3, 0xAB);  // poison: every byte must be written
    const tardis_image image{pixels.data(), src.width, src.height, src_stride, format};
    const tardis_status s = tardis_warp_affine(&image, m, w, h, out.data(), 3 * static_cast<size_t>(w));
    CHECK_MSG(s == TARDIS_OK, tardis_last_error());
    return out;
}

void run_case(const std::string& dir, const Case& c) {
    const Image src = read_ppm(dir + "/" + c.src);
    const Image ref = read_ppm(dir + "/" + c.crop);
    CHECK(ref.width == c.in_w && ref.height == c.in_h);

    // Affine: the public function for plain crops, the internal one for the augmentation parameters.
    double m[6];
    if (c.rotation == 0.0 && !c.flip) {
        CHECK(tardis_crop_affine(src.width, src.height, c.has_box ? &c.box : nullptr, c.padding, c.in_w, c.in_h, m) ==
              TARDIS_OK);
    } else {
        const tardis::CropBox box =
            tardis::box_from_xywh(c.box.x, c.box.y, c.box.width, c.box.height, c.in_w, c.in_h, c.padding);
        const tardis::Affine a = tardis::crop_affine(box, c.in_w, c.in_h, c.rotation, c.flip != 0);
        std::copy(a.m, a.m + 6, m);
    }
    for (int i = 0; i < 6; ++i)
        CHECK_MSG(std::fabs(m[i] - c.m[i]) <= 1e-9 * std::max(1.0, std::fabs(c.m[i])),
                  c.crop + ": affine[" + std::to_string(i) + "] " + std::to_string(m[i]) + " vs Python " +
                      std::to_string(c.m[i]));

    const size_t n = ref.rgb.size();
    const std::vector<unsigned char> crop = warp(src, m, c.in_w, c.in_h, 3 * static_cast<size_t>(src.width),
                                                 TARDIS_PIXEL_RGB8, src.rgb);
    const Diff vs_python = compare(crop.data(), ref.rgb.data(), n);
    CHECK_MSG(vs_python.max <= 1, c.crop + ": max difference to the Python crop " + std::to_string(vs_python.max));

    // A padded row stride and BGR order must give the same pixels (BGR: channels reversed on both sides).
    const size_t stride = 3 * static_cast<size_t>(src.width) + 13;
    std::vector<unsigned char> padded(stride * src.height, 0x5A), bgr(stride * src.height, 0x5A);
    for (int y = 0; y < src.height; ++y) {
        for (int x = 0; x < 3 * src.width; ++x) {
            const size_t i = static_cast<size_t>(y) * 3 * src.width + x;
            padded[y * stride + x] = src.rgb[i];
            bgr[y * stride + x] = src.rgb[i - x % 3 + (2 - x % 3)];
        }
    }
    CHECK_MSG(warp(src, m, c.in_w, c.in_h, stride, TARDIS_PIXEL_RGB8, padded) == crop, c.crop + ": stride changes pixels");
    const std::vector<unsigned char> crop_bgr = warp(src, m, c.in_w, c.in_h, stride, TARDIS_PIXEL_BGR8, bgr);
    bool swapped = true;
    for (size_t i = 0; i < n; ++i) swapped = swapped && crop_bgr[i] == crop[i - i % 3 + (2 - i % 3)];
    CHECK_MSG(swapped, c.crop + ": BGR input is not the channel-reversed RGB result");

    std::printf("%-24s vs Python cv2: max %d, %.3f%% values differ", c.crop.c_str(), vs_python.max,
                100 * vs_python.fraction);
#if defined(TARDIS_HAVE_OPENCV_IO)
    cv::Mat src_mat(src.height, src.width, CV_8UC3, const_cast<unsigned char*>(src.rgb.data()));
    cv::Mat affine(2, 3, CV_64F, m), out;
    cv::warpAffine(src_mat, out, affine, cv::Size(c.in_w, c.in_h), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                   cv::Scalar::all(0));
    // OpenCV < 4.11 snaps source coordinates to 1/32 px and weights to 1/32768 (fixed point); later versions, and
    // the Python reference here, interpolate in floating point. The snapping moves a sample by up to 1/64 px, which on
    // a sharp edge is worth a second grey level: the Python crop itself is 2 levels from OpenCV 4.6 on these frames.
    // So: within 1 level of a floating-point OpenCV, within 2 levels (rarely) of a fixed-point one.
    const Diff vs_opencv = compare(crop.data(), out.ptr<unsigned char>(), n);
    const Diff python_vs_opencv = compare(ref.rgb.data(), out.ptr<unsigned char>(), n);
    const bool fixed_point = CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR < 11;
    CHECK_MSG(vs_opencv.max <= (fixed_point ? 2 : 1),
              c.crop + ": max difference to OpenCV C++ " + std::to_string(vs_opencv.max));
    CHECK_MSG(vs_opencv.fraction_over_1 <= 1e-3, c.crop + ": too many values 2 levels from OpenCV C++");
    CHECK_MSG(vs_opencv.fraction <= 0.06, c.crop + ": too many values differ from OpenCV C++");
    std::printf("; vs OpenCV " CV_VERSION " C++: max %d, %.3f%% differ, %.4f%% by 2 (Python crop vs it: max %d)",
                vs_opencv.max, 100 * vs_opencv.fraction, 100 * vs_opencv.fraction_over_1, python_vs_opencv.max);
#endif
    std::printf("\n");
}

void test_bad_arguments() {
    const unsigned char pixels[12] = {0};
    double m[6] = {1, 0, 0, 0, 1, 0};
    unsigned char out[12];
    tardis_image image{pixels, 2, 2, 5, TARDIS_PIXEL_RGB8};  // stride 5 < 3 * 2
    CHECK(tardis_warp_affine(&image, m, 2, 2, out, 6) == TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("stride 5 bytes is smaller than 3 * width = 6") != std::string::npos);
    image.stride_bytes = 6;
    double singular[6] = {0, 0, 0, 0, 0, 0};
    CHECK(tardis_warp_affine(&image, singular, 2, 2, out, 6) == TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("singular") != std::string::npos);
    const tardis_box negative{0, 0, -1, 5};
    CHECK(tardis_crop_affine(640, 480, &negative, 1.25f, 256, 256, m) == TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("non-negative width and height") != std::string::npos);
    const tardis_box nan_box{NAN, 0, 1, 5};
    CHECK(tardis_crop_affine(640, 480, &nan_box, 1.25f, 256, 256, m) == TARDIS_ERROR_INVALID_ARGUMENT);
    const tardis_box ok{0, 0, 10, 5};
    CHECK(tardis_crop_affine(640, 480, &ok, 0.0f, 256, 256, m) == TARDIS_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(tardis_last_error()).find("padding") != std::string::npos);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <data_dir> <reference_dir>\n", argv[0]);
        return 2;
    }
    tardis::test::need_path(std::string(argv[1]) + "/data/openfield-Pranav-2018-10-30",
                            "the ctests read tests/fixtures (CMake -DTARDIS_TEST_DATA_DIR)");
    const std::string dir = argv[2];
    std::ifstream cases(dir + "/cases.txt");
    CHECK_MSG(cases.good(), dir + "/cases.txt is missing: the make_reference_crops fixture did not run");
    std::string line;
    int count = 0;
    while (std::getline(cases, line)) {
        if (line.empty()) continue;
        std::istringstream f(line);
        Case c{};
        f >> c.src >> c.crop >> c.in_w >> c.in_h >> c.has_box >> c.box.x >> c.box.y >> c.box.width >> c.box.height >>
            c.padding >> c.rotation >> c.flip;
        for (double& v : c.m) f >> v;
        CHECK_MSG(!f.fail(), "malformed line in cases.txt: " + line);
        run_case(dir, c);
        ++count;
    }
    CHECK_MSG(count >= 10, "expected the reference cases of 3 frames, got " + std::to_string(count));
    test_bad_arguments();
    return tardis::test::finish("test_preprocess");
}
