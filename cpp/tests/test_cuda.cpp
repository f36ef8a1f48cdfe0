// CUDA kernels against the CPU code: decoding (argmax and msra exact, soft-argmax 1e-4 px) on the golden heatmaps
// and on awkward shapes (odd H x W, K = 1, batch 1 and 3, ties, invalid rows), and the crop warp (identical pixels
// expected, at most one grey level allowed) on a synthetic image through rotated, flipped and out-of-frame crops.
// Outputs are poisoned before each launch so an unwritten element fails. Registered only when configure found a GPU.
//
// usage: test_cuda <data_dir>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "cuda_kernels.hpp"
#include "decode.hpp"
#include "geometry.hpp"
#include "npz.hpp"

namespace {

template <typename T>
struct Device {
    T* ptr = nullptr;
    size_t n = 0;
    explicit Device(size_t count) : n(count) {
        if (cudaMalloc(&ptr, count * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
    }
    ~Device() { cudaFree(ptr); }
    void upload(const std::vector<T>& host) { cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice); }
    std::vector<T> download() const {
        std::vector<T> host(n);
        cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
        return host;
    }
    void poison() { cudaMemset(ptr, 0xFF, n * sizeof(T)); }  // NaN for floats
};

void compare_decode(const std::vector<float>& maps, int n, int k, int h, int w, tardis_decode_method method,
                    float beta, const std::string& what) {
    const size_t rows = static_cast<size_t>(n) * k;
    std::vector<float> cpu_kps(rows * 2), cpu_scores(rows);
    tardis::decode_heatmaps_cpu(maps.data(), n, k, h, w, method, beta, cpu_kps.data(), cpu_scores.data());
    Device<float> d_maps(maps.size()), d_kps(rows * 2), d_scores(rows);
    d_maps.upload(maps);
    d_kps.poison();
    d_scores.poison();
    tardis::cuda::decode_heatmaps(d_maps.ptr, n, k, h, w, method, beta, d_kps.ptr, d_scores.ptr, nullptr);
    CHECK_MSG(cudaDeviceSynchronize() == cudaSuccess, what + ": kernel failed");
    const std::vector<float> kps = d_kps.download(), scores = d_scores.download();
    const double tol = method == TARDIS_DECODE_SOFT_ARGMAX ? 1e-4 : 0.0;
    double worst = 0.0;
    for (size_t i = 0; i < rows; ++i) {
        CHECK_MSG(scores[i] == cpu_scores[i], what + ": score of row " + std::to_string(i));
        for (int c = 0; c < 2; ++c) {
            const double e = std::fabs(kps[2 * i + c] - cpu_kps[2 * i + c]);
            worst = std::max(worst, std::isnan(e) ? INFINITY : e);
        }
    }
    CHECK_MSG(worst <= tol, what + ": max |CUDA - CPU| " + std::to_string(worst));
    std::printf("decode %-28s max |CUDA - CPU| %.2e\n", what.c_str(), worst);
}

void test_decode(const std::string& shared) {
    const auto golden = tardis::test::load_npz(shared + "/golden/heatmap_codec.npz");
    const auto& hm = golden.at("heatmaps");
    const float beta = golden.at("softargmax_beta").data.at(0);
    for (auto method : {TARDIS_DECODE_ARGMAX, TARDIS_DECODE_MSRA, TARDIS_DECODE_SOFT_ARGMAX})
        compare_decode(hm.data, 8, 17, 64, 64, method, beta, std::string("golden ") + tardis::decode_method_name(method));

    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    struct Shape {
        int n, k, h, w;
    };
    for (const Shape& s : {Shape{1, 1, 5, 7}, Shape{3, 2, 17, 13}, Shape{1, 3, 64, 48}, Shape{2, 1, 1, 1}}) {
        std::vector<float> maps(static_cast<size_t>(s.n) * s.k * s.h * s.w);
        for (float& v : maps) v = normal(rng);
        if (maps.size() > 4) maps[1] = maps[3] = 1e3f;  // a tie in the first map: the first one wins
        maps[maps.size() - 1] = -5.0f;                   // keep some rows entirely negative below
        if (s.k > 1) std::fill(maps.begin(), maps.begin() + s.h * s.w, -1.0f);  // an invalid row (score <= 0)
        const std::string name = std::to_string(s.n) + "x" + std::to_string(s.k) + "x" + std::to_string(s.h) + "x" +
                                 std::to_string(s.w);
        for (auto method : {TARDIS_DECODE_ARGMAX, TARDIS_DECODE_MSRA, TARDIS_DECODE_SOFT_ARGMAX})
            compare_decode(maps, s.n, s.k, s.h, s.w, method, 2.0f, name + " " + tardis::decode_method_name(method));
    }
    bool refused = false;
    try {
        tardis::cuda::decode_heatmaps(nullptr, 1, 1, 4, 4, TARDIS_DECODE_DARK, 0.0f, nullptr, nullptr, nullptr);
    } catch (const tardis::Error& e) {
        refused = e.status() == TARDIS_ERROR_UNSUPPORTED;
    }
    CHECK_MSG(refused, "DARK on CUDA must be refused with TARDIS_ERROR_UNSUPPORTED");
}

void test_warp() {
    const int w = 641, h = 479;  // odd sizes
    const size_t stride = 3 * w + 5;
    std::vector<uint8_t> image(stride * h);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < 3 * w; ++x)
            image[y * stride + x] = static_cast<uint8_t>((x * 7 + y * 13 + (x * y) % 31) & 0xFF);
    Device<uint8_t> d_image(image.size());
    d_image.upload(image);
    const int in_w = 192, in_h = 256;
    const tardis::CropBox boxes[] = {tardis::box_from_image(w, h, in_w, in_h),
                                     tardis::box_from_xywh(100.5, 80.25, 150, 90, in_w, in_h, 1.25),
                                     tardis::box_from_xywh(w - 40.0, -30.0, 120, 100, in_w, in_h, 1.25)};
    for (const auto& box : boxes) {
        for (int variant = 0; variant < 2; ++variant) {
            const tardis::Affine a = tardis::crop_affine(box, in_w, in_h, variant ? 33.0 : 0.0, variant == 1);
            std::vector<uint8_t> crop(static_cast<size_t>(in_w) * in_h * 3);
            tardis::warp_affine_u8(image.data(), w, h, stride, a, in_w, in_h, crop.data(), 3 * in_w, true);
            std::vector<float> cpu(crop.size());
            tardis::interleaved_to_planar(crop.data(), in_w, in_h, cpu.data());
            Device<float> d_planar(cpu.size());
            d_planar.poison();
            tardis::cuda::warp_to_planar(d_image.ptr, w, h, stride, a, in_w, in_h, true, d_planar.ptr, nullptr);
            CHECK_MSG(cudaDeviceSynchronize() == cudaSuccess, "warp kernel failed");
            const std::vector<float> gpu = d_planar.download();
            double worst = 0.0;
            size_t differ = 0;
            for (size_t i = 0; i < cpu.size(); ++i) {
                const double e = std::fabs(gpu[i] - cpu[i]);
                worst = std::max(worst, std::isnan(e) ? INFINITY : e);
                differ += e != 0;
            }
            CHECK_MSG(worst <= 1.0, "warp: max |CUDA - CPU| " + std::to_string(worst));
            std::printf("warp box (%.1f, %.1f) %s: max |CUDA - CPU| %.0f, %zu values differ\n", box.cx, box.cy,
                        variant ? "rotated+flipped" : "plain", worst, differ);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <data_dir>\n", argv[0]);
        return 2;
    }
    if (tardis::cuda::device_count() == 0) {
        std::fprintf(stderr, "FAILED: no CUDA device, but this test is only registered when configure found one\n");
        return 1;
    }
    test_decode(tardis::test::need_path(argv[1], "the ctests read tests/fixtures (CMake -DTARDIS_TEST_DATA_DIR)"));
    test_warp();
    return tardis::test::finish("test_cuda");
}
