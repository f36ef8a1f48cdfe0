// Multi-animal tracking: a C++ mirror of tardis_edge/tracking.py (Tracker, TrackerConfig, OneEuroFilter), pinned
// to it by tests/test_tracking.cpp. Each frame's poses in, one stable identity per pose out: tracks predict their
// keypoints with a constant-velocity (alpha-beta) model; poses join tracks by one least-cost assignment on OKS + box
// IoU similarity; with a known number of animals the ids stay in 0 .. max_animals - 1 and a lost animal is
// re-identified by position.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace tardis {

// tracking.TrackerConfig (the defaults are Python's).
struct TrackerConfig {
    int max_animals = 0;  // known number of animals (ids 0 .. max_animals - 1); 0: open-ended (Python's None)
    double min_keypoint_score = 0.2;
    double min_similarity = 0.3;
    double oks_weight = 1.0;
    double iou_weight = 0.5;
    std::vector<double> oks_sigmas;  // per keypoint; empty: uniform kDefaultOksSigma
    bool use_motion = true;
    double position_gain = 0.7;
    double velocity_rigidity = 0.5;
    double velocity_gain = 0.3;
    int motion_horizon = 10;
    double lost_scale_growth = 0.1;
    double ambiguity_margin = 0.05;
    int max_age = 30;
    int new_track_after = 1;
    bool smooth = false;
    double fps = 30.0;
    double min_cutoff = 1.0;
    double beta = 0.2;
    double d_cutoff = 1.0;

    // Throws Error(INVALID_ARGUMENT) naming the bad value (TrackerConfig.__post_init__).
    void validate() const;
};

constexpr double kDefaultOksSigma = 0.1;  // metrics.DEFAULT_OKS_SIGMA

// tracking.TrackedFrame.
struct TrackedFrame {
    int frame_index = 0;
    std::vector<int64_t> track_ids;  // (N,) -1: dropped, unusable, or not yet a track
    std::vector<int> kept;           // poses that took part, most confident first
    int num_dropped = 0;             // usable poses beyond max_animals
    std::vector<double> keypoints;   // (N, K, 2) the input keypoints, one-euro smoothed for tracked poses when on
};

class Tracker {
public:
    explicit Tracker(const TrackerConfig& config);
    ~Tracker();
    Tracker(Tracker&&) noexcept;
    Tracker& operator=(Tracker&&) noexcept;

    // Link one frame's poses to the tracks: keypoints (n, k, 2) image pixels (NaN: not found), scores (n, k) (NaN
    // counts as 0), boxes (n, 4) xywh (NaN rows: none) or nullptr. frame_index: greater than the last call's; empty:
    // the last call's + 1. Throws Error(INVALID_ARGUMENT) for a frame out of order or a keypoint count that changed.
    TrackedFrame update(const double* keypoints, const double* scores, const double* boxes, int n, int k,
                        std::optional<int> frame_index = std::nullopt);
    void reset();
    const TrackerConfig& config() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace tardis
