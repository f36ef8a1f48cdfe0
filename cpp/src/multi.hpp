// Many animals per frame: a C++ mirror of tardis_edge/multi.py (MultiAnimalPredictor, deduplicate) and of the
// refine-box rule of tardis_edge/predict.py (box_from_prediction), pinned to them by tests/test_multi.cpp.
//
// Per frame: boxes from the finder (every detect_every frames, and whenever fewer than expected_animals are held;
// held boxes no found box overlaps are kept) or from each animal's previous pose; pose on every box, then again on
// the box around each pose's confident keypoints (the refine pass); duplicates and poses with too few confident
// keypoints dropped; at most max_animals kept, strongest first.
#pragma once

#include <memory>
#include <vector>

#include "finder.hpp"
#include "geometry.hpp"
#include "runner.hpp"

namespace tardis {

// multi.MultiConfig.
struct MultiConfig {
    int detect_every = 1;              // run the finder every N frames; pose-derived boxes in between
    int expected_animals = 0;          // > 0: run the finder on every frame that holds fewer animals than this
    int max_animals = 0;               // keep at most this many animals per frame; 0: no limit
    int min_keypoints = 3;             // an animal needs this many confident keypoints (else it is lost)
    double duplicate_distance = 0.25;  // median keypoint distance / animal size below which two poses are one
    double keep_iou = 0.3;             // a held box overlapping every found box by less than this is kept
    bool refine_tracked = true;        // frames without a finder run: also the refine pass (false: one pass)
};

// The refine-box rule of predict.PredictConfig as the runtime sets it (runtime.boxes.FollowConfig).
struct RefineRule {
    bool two_pass = true;        // the refine pass
    double min_score = 0.2;      // keypoints above this score define the refine box (box_min_score)
    double padding = 1.25;       // refine box = keypoint extent x padding (model.json's padding)
    double min_size = 16.0;      // image pixels; unpadded lower bound of the refine box side
};

// Poses of M animals, K keypoints each: keypoints (M, K, 2) image pixels (NaN where not found), scores (M, K).
struct Poses {
    int k = 0;
    std::vector<double> keypoints;
    std::vector<float> scores;

    size_t size() const { return k ? scores.size() / static_cast<size_t>(k) : 0; }
    const double* keypoints_of(size_t i) const { return keypoints.data() + i * 2 * k; }
    const float* scores_of(size_t i) const { return scores.data() + i * k; }
};

// multi.FramePoses.
struct FramePoses {
    Poses poses;
    std::vector<double> instance_scores;  // (M,) mean keypoint score clipped to [0, 1]
    std::vector<CropBox> boxes;           // the crop boxes the final poses were predicted in
    bool detected = false;                // the finder ran on this frame
    int dropped = 0;                      // animals beyond max_animals
};

// predict.confident for one keypoint.
bool confident(const double* xy, float score, double min_score);
// predict.box_from_prediction: the refine box around one pose's confident keypoints (geometry.box_from_keypoints
// on the REFINE_BOX_GRID), `fallback` when none is confident.
CropBox box_from_prediction(const double* keypoints_xy, const float* scores, int k, const CropBox& fallback,
                            int input_w, int input_h, const RefineRule& rule);
// tracking.box_iou of two crop boxes (as CropBox.as_xywh).
double box_iou(const CropBox& a, const CropBox& b);
// multi.instance_score of one pose: the mean keypoint score clipped to [0, 1].
double instance_score(const float* scores, int k);
// multi.deduplicate: the poses to keep, strongest first, and how many were dropped beyond config.max_animals.
std::vector<int> deduplicate(const Poses& poses, const MultiConfig& config, double min_score, int* dropped);

// multi.MultiAnimalPredictor: frame-by-frame multi-animal pose for one video (holds the previous frame's animals).
class MultiAnimalPredictor {
public:
    MultiAnimalPredictor(Runner& runner, std::unique_ptr<Finder> finder, const MultiConfig& config);

    FramePoses operator()(const ImageView& image);
    void reset();
    const MultiConfig& config() const { return config_; }

private:
    bool needs_detection() const;
    std::vector<CropBox> detect(const ImageView& image);
    void predict(const ImageView& image, const std::vector<CropBox>& boxes, Poses* poses);

    Runner& runner_;
    std::unique_ptr<Finder> finder_;
    MultiConfig config_;
    RefineRule rule_;
    std::vector<CropBox> held_;  // pose-derived boxes of the previous frame's animals
    long long frames_seen_ = 0;
    std::vector<float> keypoints_f_;
};

}  // namespace tardis
