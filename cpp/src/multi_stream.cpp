// The runtime's multi-animal stream (tardis_edge/runtime/multi.py): open_multi's settings from model.json and the
// caller's options, then per frame the predictor and the tracker.
#include "multi_stream.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "error.hpp"

namespace tardis {

namespace {

// The most animals per frame: the caller's, else the artifact's finder.max_animals (as runtime.multi.multi_runner).
int max_in_use(const Runner& runner, const tardis_multi_options& options) {
    const Metadata& meta = runner.metadata();
    if (!meta.finder)
        throw Error(TARDIS_ERROR_UNSUPPORTED,
                    meta.source + " has no animal finder (model.json has no \"finder\"): the model was trained on "
                                  "single-animal data, so it cannot find several animals; use tardis_runner_run / "
                                  "tardis_runner_run_boxes, or train on multi-animal labels and re-export");
    if (options.max_animals < -1)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "max_animals " + std::to_string(options.max_animals) +
                                                       " must be -1 (the artifact's), 0 (no limit) or positive");
    return options.max_animals < 0 ? meta.finder->max_animals : options.max_animals;
}

std::unique_ptr<Finder> make_finder(const Runner& runner, const tardis_multi_options& options) {
    max_in_use(runner, options);  // the artifact has a finder
    const std::string precision = options.finder_precision ? options.finder_precision : "";
    return std::make_unique<Finder>(*runner.metadata().finder, runner.make_finder_backend(precision),
                                    options.max_animals);
}

MultiConfig multi_config(const tardis_multi_options& options, int most) {
    if (options.expected_animals < -1)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "expected_animals " + std::to_string(options.expected_animals) +
                                                       " must be -1 (= max_animals), 0 (off) or positive");
    if (!(options.duplicate_distance >= 0) || !(options.keep_iou >= 0))
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "duplicate_distance " + std::to_string(options.duplicate_distance) +
                                                       " and keep_iou " + std::to_string(options.keep_iou) +
                                                       " must be numbers >= 0");
    MultiConfig c;
    c.detect_every = options.detect_every;
    c.max_animals = most;
    c.expected_animals = options.expected_animals < 0 ? most : options.expected_animals;
    c.min_keypoints = options.min_keypoints;
    c.duplicate_distance = options.duplicate_distance;
    c.keep_iou = options.keep_iou;
    c.refine_tracked = options.refine_tracked != 0;
    return c;
}

TrackerConfig tracker_config(const tardis_multi_options& o, int most, const Metadata& meta) {
    TrackerConfig c;
    c.max_animals = most;
    c.oks_sigmas = meta.oks_sigmas;
    c.min_keypoint_score = o.min_keypoint_score;
    c.min_similarity = o.min_similarity;
    c.oks_weight = o.oks_weight;
    c.iou_weight = o.iou_weight;
    c.use_motion = o.use_motion != 0;
    c.position_gain = o.position_gain;
    c.velocity_rigidity = o.velocity_rigidity;
    c.velocity_gain = o.velocity_gain;
    c.motion_horizon = o.motion_horizon;
    c.lost_scale_growth = o.lost_scale_growth;
    c.ambiguity_margin = o.ambiguity_margin;
    c.max_age = o.max_age;
    c.new_track_after = o.new_track_after;
    c.smooth = o.smooth != 0;
    c.fps = o.fps;
    c.min_cutoff = o.min_cutoff;
    c.beta = o.beta;
    c.d_cutoff = o.d_cutoff;
    c.validate();
    return c;
}

}  // namespace

tardis_multi_options default_multi_options() {
    tardis_multi_options o;
    std::memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.max_animals = -1;
    o.detect_every = 1;
    o.expected_animals = -1;
    o.finder_precision = nullptr;
    const MultiConfig multi;
    o.min_keypoints = multi.min_keypoints;
    o.duplicate_distance = multi.duplicate_distance;
    o.keep_iou = multi.keep_iou;
    o.refine_tracked = multi.refine_tracked;
    const TrackerConfig t;
    o.track = 1;
    o.min_keypoint_score = t.min_keypoint_score;
    o.min_similarity = t.min_similarity;
    o.oks_weight = t.oks_weight;
    o.iou_weight = t.iou_weight;
    o.use_motion = t.use_motion;
    o.position_gain = t.position_gain;
    o.velocity_rigidity = t.velocity_rigidity;
    o.velocity_gain = t.velocity_gain;
    o.motion_horizon = t.motion_horizon;
    o.lost_scale_growth = t.lost_scale_growth;
    o.ambiguity_margin = t.ambiguity_margin;
    o.max_age = t.max_age;
    o.new_track_after = t.new_track_after;
    o.smooth = t.smooth;
    o.fps = t.fps;
    o.min_cutoff = t.min_cutoff;
    o.beta = t.beta;
    o.d_cutoff = t.d_cutoff;
    return o;
}

MultiAnimalStream::MultiAnimalStream(Runner& runner, const tardis_multi_options& options)
    : runner_(runner),
      predictor_(runner, make_finder(runner, options), multi_config(options, max_in_use(runner, options))) {
    if (options.track) tracker_.emplace(tracker_config(options, max_animals(), runner.metadata()));
}

void MultiAnimalStream::reset() {
    predictor_.reset();
    if (tracker_) tracker_->reset();
    last_ = StreamFrame{};
}

const StreamFrame& MultiAnimalStream::process(const ImageView& image, int frame_index) {
    const int index = frame_index >= 0 ? frame_index : last_.frame_index + 1;
    if (has_frame() && index <= last_.frame_index)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "frame_index " + std::to_string(index) + " does not come after the last frame " +
                        std::to_string(last_.frame_index) +
                        "; feed one video's frames in order (tardis_multi_reset before the next video)");
    StreamFrame frame;
    frame.frame_index = index;
    frame.poses = predictor_(image);
    const size_t m = frame.poses.poses.size();
    const int k = num_keypoints();
    frame.dropped = frame.poses.dropped;
    frame.track_ids.assign(m, -1);
    frame.keypoints = frame.poses.poses.keypoints;
    if (tracker_) {
        std::vector<double> scores(frame.poses.poses.scores.begin(), frame.poses.poses.scores.end());
        std::vector<double> boxes;
        for (const CropBox& b : frame.poses.boxes) {  // CropBox.as_xywh
            boxes.insert(boxes.end(), {b.cx - b.width / 2, b.cy - b.height / 2, b.width, b.height});
        }
        TrackedFrame tracked = tracker_->update(frame.poses.poses.keypoints.data(), scores.data(), boxes.data(),
                                                static_cast<int>(m), k, index);
        for (size_t i = 0; i < m; ++i) frame.track_ids[i] = static_cast<int>(tracked.track_ids[i]);
        frame.keypoints = std::move(tracked.keypoints);
        frame.dropped += tracked.num_dropped;
    }
    last_ = std::move(frame);
    return last_;
}

}  // namespace tardis
