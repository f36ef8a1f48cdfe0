// The multi-animal predictor (tardis_edge/multi.py) and the refine-box rule (tardis_edge/predict.py,
// tardis_edge/geometry.py box_from_keypoints), computed as the Python reference computes them: keypoints in double,
// keypoint scores compared with thresholds in float32 (NumPy compares a float32 array with a Python float in float32).
#include "multi.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "error.hpp"
#include "numeric.hpp"

namespace tardis {

namespace {

constexpr double kRefineBoxGrid = 0.5;  // geometry.REFINE_BOX_GRID

// The order of np.argsort(-values, kind="stable"): largest first, ties in index order.
std::vector<int> strongest_first(const std::vector<double>& values) {
    std::vector<int> order(values.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return -values[a] < -values[b]; });
    return order;
}

// multi._animal_size: the diagonal of the confident keypoints' extent (1 with fewer than two).
double animal_size(const double* keypoints, const std::vector<bool>& ok) {
    double lo_x = INFINITY, lo_y = INFINITY, hi_x = -INFINITY, hi_y = -INFINITY;
    int count = 0;
    for (size_t j = 0; j < ok.size(); ++j) {
        if (!ok[j]) continue;
        lo_x = std::min(lo_x, keypoints[2 * j]), hi_x = std::max(hi_x, keypoints[2 * j]);
        lo_y = std::min(lo_y, keypoints[2 * j + 1]), hi_y = std::max(hi_y, keypoints[2 * j + 1]);
        ++count;
    }
    return count > 1 ? std::hypot(hi_x - lo_x, hi_y - lo_y) : 1.0;
}

std::vector<bool> confident_mask(const double* keypoints, const float* scores, int k, double min_score) {
    std::vector<bool> ok(static_cast<size_t>(k));
    for (int j = 0; j < k; ++j) ok[static_cast<size_t>(j)] = confident(keypoints + 2 * j, scores[j], min_score);
    return ok;
}

}  // namespace

bool confident(const double* xy, float score, double min_score) {
    return std::isfinite(xy[0]) && std::isfinite(xy[1]) && score > static_cast<float>(min_score);
}

CropBox box_from_prediction(const double* keypoints_xy, const float* scores, int k, const CropBox& fallback,
                            int input_w, int input_h, const RefineRule& rule) {
    double lo_x = INFINITY, lo_y = INFINITY, hi_x = -INFINITY, hi_y = -INFINITY;
    bool any = false;
    for (int j = 0; j < k; ++j) {
        if (!confident(keypoints_xy + 2 * j, scores[j], rule.min_score)) continue;
        const double x = keypoints_xy[2 * j], y = keypoints_xy[2 * j + 1];
        lo_x = std::min(lo_x, x), lo_y = std::min(lo_y, y), hi_x = std::max(hi_x, x), hi_y = std::max(hi_y, y);
        any = true;
    }
    if (!any) return fallback;
    // widened outwards to the grid; a point within 1e-3 grid steps of a grid line counts as on it
    const double g = kRefineBoxGrid;
    lo_x = std::floor(lo_x / g + 1e-3) * g, lo_y = std::floor(lo_y / g + 1e-3) * g;
    hi_x = std::ceil(hi_x / g - 1e-3) * g, hi_y = std::ceil(hi_y / g - 1e-3) * g;
    const double w = std::max(hi_x - lo_x, rule.min_size), h = std::max(hi_y - lo_y, rule.min_size);
    return box_from_center_size((lo_x + hi_x) / 2, (lo_y + hi_y) / 2, w, h, input_w, input_h, rule.padding);
}

double box_iou(const CropBox& a, const CropBox& b) {
    const double ax = a.cx - a.width / 2, ay = a.cy - a.height / 2;  // CropBox.as_xywh
    const double bx = b.cx - b.width / 2, by = b.cy - b.height / 2;
    const double iw = std::max(0.0, std::min(ax + a.width, bx + b.width) - std::max(ax, bx));
    const double ih = std::max(0.0, std::min(ay + a.height, by + b.height) - std::max(ay, by));
    const double inter = iw * ih;
    const double uni = a.width * a.height + b.width * b.height - inter;
    return uni > 0 ? inter / uni : 0.0;
}

double instance_score(const float* scores, int k) {
    std::vector<double> clipped(static_cast<size_t>(k));
    for (int j = 0; j < k; ++j) clipped[static_cast<size_t>(j)] = std::clamp(static_cast<double>(scores[j]), 0.0, 1.0);
    return numpy_mean(clipped);
}

std::vector<int> deduplicate(const Poses& poses, const MultiConfig& config, double min_score, int* dropped) {
    const int k = poses.k;
    const size_t n = poses.size();
    std::vector<double> strength(n);
    for (size_t i = 0; i < n; ++i) strength[i] = instance_score(poses.scores_of(i), k);
    std::vector<int> kept;
    std::vector<std::vector<bool>> kept_ok;
    for (int i : strongest_first(strength)) {
        const double* kp_i = poses.keypoints_of(static_cast<size_t>(i));
        const std::vector<bool> ok = confident_mask(kp_i, poses.scores_of(static_cast<size_t>(i)), k, min_score);
        // a model with fewer keypoints than min_keypoints needs all of them (as tardis_edge.multi.deduplicate)
        if (std::count(ok.begin(), ok.end(), true) < std::min(config.min_keypoints, k)) continue;
        bool duplicate = false;
        for (size_t m = 0; m < kept.size() && !duplicate; ++m) {
            const double* kp_j = poses.keypoints_of(static_cast<size_t>(kept[m]));
            std::vector<double> distances;
            for (int j = 0; j < k; ++j)
                if (ok[static_cast<size_t>(j)] && kept_ok[m][static_cast<size_t>(j)])
                    distances.push_back(std::hypot(kp_i[2 * j] - kp_j[2 * j], kp_i[2 * j + 1] - kp_j[2 * j + 1]));
            if (!distances.empty() &&
                numpy_median(distances) < config.duplicate_distance * animal_size(kp_j, kept_ok[m]))
                duplicate = true;
        }
        if (!duplicate) {
            kept.push_back(i);
            kept_ok.push_back(ok);
        }
    }
    *dropped = 0;
    if (config.max_animals > 0 && static_cast<int>(kept.size()) > config.max_animals) {
        *dropped = static_cast<int>(kept.size()) - config.max_animals;
        kept.resize(static_cast<size_t>(config.max_animals));
    }
    return kept;
}

MultiAnimalPredictor::MultiAnimalPredictor(Runner& runner, std::unique_ptr<Finder> finder, const MultiConfig& config)
    : runner_(runner), finder_(std::move(finder)), config_(config) {
    if (config.detect_every < 1 || config.max_animals < 0 || config.expected_animals < 0 || config.min_keypoints < 1)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "multi-animal options need detect_every >= 1, max_animals >= 0, expected_animals >= 0 and "
                    "min_keypoints >= 1; got " + std::to_string(config.detect_every) + ", " +
                        std::to_string(config.max_animals) + ", " + std::to_string(config.expected_animals) + ", " +
                        std::to_string(config.min_keypoints));
    rule_.padding = runner.metadata().padding;
}

void MultiAnimalPredictor::reset() {
    held_.clear();
    frames_seen_ = 0;
}

bool MultiAnimalPredictor::needs_detection() const {
    if (frames_seen_ % config_.detect_every == 0 || held_.empty()) return true;
    return config_.expected_animals > 0 && static_cast<int>(held_.size()) < config_.expected_animals;
}

std::vector<CropBox> MultiAnimalPredictor::detect(const ImageView& image) {
    const Metadata& meta = runner_.metadata();
    std::vector<CropBox> boxes;
    for (const FoundAnimal& a : finder_->find(image))
        boxes.push_back(a.crop_box(meta.input_width, meta.input_height, rule_.padding));
    const size_t found = boxes.size();
    for (const CropBox& held : held_) {  // a held animal no found box overlaps is kept (a missed detection)
        bool apart = true;
        for (size_t i = 0; i < found; ++i) apart = apart && box_iou(held, boxes[i]) < config_.keep_iou;
        if (apart) boxes.push_back(held);
    }
    return boxes;
}

void MultiAnimalPredictor::predict(const ImageView& image, const std::vector<CropBox>& boxes, Poses* poses) {
    poses->keypoints.resize(boxes.size() * 2 * static_cast<size_t>(poses->k));
    poses->scores.resize(boxes.size() * static_cast<size_t>(poses->k));
    runner_.run_crops(image, boxes, poses->keypoints.data(), poses->scores.data());
}

FramePoses MultiAnimalPredictor::operator()(const ImageView& image) {
    const Metadata& meta = runner_.metadata();
    const int k = meta.num_keypoints();
    FramePoses out;
    out.poses.k = k;
    out.detected = needs_detection();
    std::vector<CropBox> first = out.detected ? detect(image) : held_;
    ++frames_seen_;
    if (first.empty()) {
        held_.clear();
        return out;
    }
    Poses poses;
    poses.k = k;
    predict(image, first, &poses);
    std::vector<CropBox> final_boxes = first;
    if (rule_.two_pass && (out.detected || config_.refine_tracked)) {
        for (size_t i = 0; i < first.size(); ++i)
            final_boxes[i] = box_from_prediction(poses.keypoints_of(i), poses.scores_of(i), k, first[i],
                                                 meta.input_width, meta.input_height, rule_);
        predict(image, final_boxes, &poses);
    }
    const std::vector<int> kept = deduplicate(poses, config_, rule_.min_score, &out.dropped);
    held_.clear();
    for (int i : kept) {
        const size_t row = static_cast<size_t>(i);
        out.poses.keypoints.insert(out.poses.keypoints.end(), poses.keypoints_of(row), poses.keypoints_of(row) + 2 * k);
        out.poses.scores.insert(out.poses.scores.end(), poses.scores_of(row), poses.scores_of(row) + k);
        out.instance_scores.push_back(instance_score(poses.scores_of(row), k));
        out.boxes.push_back(final_boxes[row]);
        held_.push_back(box_from_prediction(poses.keypoints_of(row), poses.scores_of(row), k, final_boxes[row],
                                            meta.input_width, meta.input_height, rule_));
    }
    return out;
}

}  // namespace tardis
