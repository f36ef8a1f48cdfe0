// One video's multi-animal state: the predictor's held animals and the tracker's tracks (a C++ mirror of
// tardis_edge/runtime/multi.py: open_multi's settings, MultiAnimalStream.__call__), behind tardis_multi.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "multi.hpp"
#include "runner.hpp"
#include "tardis_edge.h"
#include "tracking.hpp"

namespace tardis {

// The animals of one frame, as the C API hands them out.
struct StreamFrame {
    int frame_index = -1;
    FramePoses poses;
    std::vector<int> track_ids;    // (M,) -1: not tracked
    std::vector<double> keypoints;  // (M, K, 2) the tracker's output keypoints (smoothed when asked), image pixels
    int dropped = 0;               // beyond max_animals: by the predictor and by the tracker
};

class MultiAnimalStream {
public:
    // Throws Error(UNSUPPORTED) when the runner's artifact has no finder, Error(INVALID_ARGUMENT) for bad options.
    MultiAnimalStream(Runner& runner, const tardis_multi_options& options);

    // frame_index < 0: the last frame's + 1. Throws Error(INVALID_ARGUMENT) when it does not grow (nothing changes).
    const StreamFrame& process(const ImageView& image, int frame_index);
    void reset();

    const StreamFrame& last() const { return last_; }
    bool has_frame() const { return last_.frame_index >= 0; }
    int max_animals() const { return predictor_.config().max_animals; }
    int num_keypoints() const { return runner_.metadata().num_keypoints(); }

private:
    Runner& runner_;
    MultiAnimalPredictor predictor_;
    std::optional<Tracker> tracker_;
    StreamFrame last_;
};

// tardis_multi_options as the Python runtime's defaults (open_multi, TrackerConfig).
tardis_multi_options default_multi_options();

}  // namespace tardis
