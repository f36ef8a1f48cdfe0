// Finder decoding and the finder graph on whole frames (tardis_edge/finder.py, mirrored operation for operation so
// the same outputs give the same animals: float32 where NumPy computes in float32, double elsewhere).
#include "finder.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.hpp"

namespace tardis {

namespace {

float sign(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

}  // namespace

std::vector<FinderPeak> decode_finder(const float* outputs, int height, int width, double stride, double min_score,
                                      int max_animals, double min_distance) {
    const int h = height, w = width;
    const float* heat = outputs;
    const float* size_w = outputs + static_cast<size_t>(h) * w;
    const float* size_h = outputs + 2 * static_cast<size_t>(h) * w;
    auto at = [&](const float* plane, int y, int x) { return plane[static_cast<size_t>(y) * w + x]; };

    struct Candidate {
        int y, x;
        float value;
    };
    std::vector<Candidate> candidates;  // row-major order, as np.nonzero
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const float v = at(heat, y, x);
            if (!(v > static_cast<float>(min_score))) continue;  // NumPy compares float32 maps in float32
            bool peak = true;  // v >= each of its 8 neighbours (outside the map: -inf); NaN neighbours fail
            for (int dy = -1; dy <= 1 && peak; ++dy) {
                for (int dx = -1; dx <= 1; ++dx) {
                    const int yy = y + dy, xx = x + dx;
                    if ((dy == 0 && dx == 0) || yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    if (!(v >= at(heat, yy, xx))) {
                        peak = false;
                        break;
                    }
                }
            }
            if (peak) candidates.push_back({y, x, v});
        }
    }
    // strongest first; equal values keep row-major order (np.argsort(-values, kind="stable"))
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const Candidate& a, const Candidate& b) { return a.value > b.value; });

    const double side_w = w * stride, side_h = h * stride;  // the finder input's side
    // The peak positions are float32 in NumPy (a float32 step added to a Python float), and so is the distance test.
    const float stride_f = static_cast<float>(stride);
    const float min_d2 = static_cast<float>(min_distance * min_distance);
    std::vector<FinderPeak> kept;
    for (const Candidate& c : candidates) {
        float px = static_cast<float>(c.x), py = static_cast<float>(c.y);
        if (c.x > 0 && c.x < w - 1) px += 0.25f * sign(at(heat, c.y, c.x + 1) - at(heat, c.y, c.x - 1));
        if (c.y > 0 && c.y < h - 1) py += 0.25f * sign(at(heat, c.y + 1, c.x) - at(heat, c.y - 1, c.x));
        bool near = false;
        for (const FinderPeak& k : kept) {
            const float dx = px - static_cast<float>(k.cx) / stride_f, dy = py - static_cast<float>(k.cy) / stride_f;
            if (dx * dx + dy * dy < min_d2) {
                near = true;
                break;
            }
        }
        if (near) continue;
        const double bw = static_cast<double>(at(size_w, c.y, c.x)) * side_w;
        const double bh = static_cast<double>(at(size_h, c.y, c.x)) * side_h;
        kept.push_back({static_cast<double>(px * stride_f), static_cast<double>(py * stride_f), std::max(bw, 0.0),
                        std::max(bh, 0.0), static_cast<double>(c.value)});
        if (max_animals > 0 && static_cast<int>(kept.size()) == max_animals) break;
    }
    return kept;
}

Finder::Finder(const FinderSpec& spec, std::unique_ptr<Backend> backend, int max_animals)
    : spec_(spec), backend_(std::move(backend)), max_animals_(max_animals < 0 ? spec.max_animals : max_animals) {}

std::vector<FoundAnimal> Finder::find(const ImageView& image) {
    const int side = spec_.input_size, out = spec_.output_size();
    // finder.frame_affine: the whole frame, aspect kept, no padding
    const Affine to_input = crop_affine(box_from_image(image.width, image.height, side, side), side, side);
    outputs_.resize(3 * static_cast<size_t>(out) * out);
    backend_->run_heatmaps(image, {to_input}, outputs_.data());
    const std::vector<FinderPeak> peaks =
        decode_finder(outputs_.data(), out, out, spec_.stride, spec_.min_score, max_animals_, spec_.min_distance);
    const Affine to_image = invert_affine(to_input);
    const double scale = 1.0 / std::fabs(to_input.m[0]);  // the letterbox is a pure scale + shift
    std::vector<FoundAnimal> found;
    for (const FinderPeak& p : peaks) {
        FoundAnimal a{};
        apply_affine(to_image, p.cx, p.cy, &a.cx, &a.cy);
        a.width = std::max(p.width * scale, spec_.min_box);
        a.height = std::max(p.height * scale, spec_.min_box);
        a.score = p.score;
        found.push_back(a);
    }
    return found;
}

}  // namespace tardis
