// The tracker of tardis_edge/tracking.py, step for step and rounding as NumPy rounds (sums along the keypoints are
// pairwise, means over rows sequential, scipy's assignment with its tie rule), so the same poses get the same ids.
#include "tracking.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <utility>

#include "assignment.hpp"
#include "error.hpp"
#include "numeric.hpp"

namespace tardis {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kForbidden = 1e6;  // assignment cost of a pair that may not match (tracking._FORBIDDEN)
constexpr double kPi = 3.14159265358979323846;

bool finite2(const double* xy) { return std::isfinite(xy[0]) && std::isfinite(xy[1]); }
bool finite_box(const double* b) { return finite2(b) && finite2(b + 2); }

// tracking.OneEuroFilter on (K, 2) keypoints.
class OneEuroFilter {
public:
    explicit OneEuroFilter(const TrackerConfig& c)
        : min_cutoff_(c.min_cutoff), beta_(c.beta), d_cutoff_(c.d_cutoff), fps_(c.fps) {}

    // x (K, 2), NaN rows missing -> the filtered keypoints (NaN where missing).
    std::vector<double> operator()(const double* x, int k, int frame_index) {
        if (value_.empty()) {
            value_.assign(2 * static_cast<size_t>(k), kNaN);
            speed_.assign(2 * static_cast<size_t>(k), 0.0);
            frame_.assign(static_cast<size_t>(k), -1);
        }
        std::vector<double> out(2 * static_cast<size_t>(k), kNaN);
        for (int j = 0; j < k; ++j) {
            const size_t r = static_cast<size_t>(j);
            if (!finite2(x + 2 * j)) continue;  // missing: the state stays as it was
            double* v = &value_[2 * r];
            double* s = &speed_[2 * r];
            if (!finite2(v)) {  // first sighting
                v[0] = x[2 * j], v[1] = x[2 * j + 1];
            } else {
                const double dt = (frame_index - frame_[r]) / fps_;  // seconds
                const double a_d = alpha(d_cutoff_, dt);
                double speed[2];
                for (int c = 0; c < 2; ++c) speed[c] = s[c] + a_d * ((x[2 * j + c] - v[c]) / dt - s[c]);
                const double cutoff = min_cutoff_ + beta_ * std::sqrt(speed[0] * speed[0] + speed[1] * speed[1]);
                const double a = alpha(cutoff, dt);
                for (int c = 0; c < 2; ++c) {
                    v[c] += a * (x[2 * j + c] - v[c]);
                    s[c] = speed[c];
                }
            }
            frame_[r] = frame_index;
            out[2 * r] = v[0], out[2 * r + 1] = v[1];
        }
        return out;
    }

private:
    static double alpha(double cutoff, double dt) {
        const double tau = 1.0 / (2.0 * kPi * cutoff);
        return 1.0 / (1.0 + tau / dt);
    }

    double min_cutoff_, beta_, d_cutoff_, fps_;
    std::vector<double> value_, speed_;  // (K, 2)
    std::vector<long long> frame_;      // (K,) frame of each keypoint's last sample
};

// tracking._Track.
struct Track {
    int64_t track_id = -1;  // -1 while tentative
    std::vector<double> keypoints;  // (K, 2) at last_frame, NaN where never seen
    std::vector<double> velocity;   // (K, 2) px / frame, NaN where unknown
    std::vector<double> scores;     // (K,)
    bool has_box = false;
    double box[4] = {kNaN, kNaN, kNaN, kNaN};  // xywh at last_frame
    double area = 1.0;  // OKS scale s²
    int last_frame = 0;
    int hits = 1;
    std::shared_ptr<OneEuroFilter> smoother;
};

using TrackPtr = std::shared_ptr<Track>;

// tracking._Poses.
struct PoseSet {
    int k = 0;
    std::vector<double> keypoints;  // (N, K, 2) NaN where missing or scored too low
    std::vector<double> scores;     // (N, K) NaN -> 0
    std::vector<double> boxes;      // (N, 4) NaN rows where none
    std::vector<double> area;       // (N,)
    std::vector<bool> well_seen;    // (N,)

    const double* kp(int i) const { return keypoints.data() + static_cast<size_t>(i) * 2 * k; }
    const double* box(int i) const { return boxes.data() + 4 * static_cast<size_t>(i); }
};

// tracking.pose_area: (w² + h²) / 2 of the known keypoints' box, at least 1; NaN without keypoints.
double pose_area(const double* kp, int k) {
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    bool any = false;
    for (int j = 0; j < k; ++j) {
        if (!finite2(kp + 2 * j)) continue;
        for (int c = 0; c < 2; ++c) lo[c] = std::min(lo[c], kp[2 * j + c]), hi[c] = std::max(hi[c], kp[2 * j + c]);
        any = true;
    }
    if (!any) return kNaN;
    const double w = hi[0] - lo[0], h = hi[1] - lo[1];
    return std::max((w * w + h * h) / 2.0, 1.0);
}

// The mean over the rows of (n, 2) values (np.mean(axis=0): a sequential sum per column).
void row_mean(const std::vector<const double*>& rows, double* out) {
    out[0] = rows[0][0], out[1] = rows[0][1];
    for (size_t i = 1; i < rows.size(); ++i) out[0] += rows[i][0], out[1] += rows[i][1];
    out[0] /= static_cast<double>(rows.size()), out[1] /= static_cast<double>(rows.size());
}

// tracking._mean_velocity: the mean velocity of the keypoints whose velocity is known (0 before any was measured).
void mean_velocity(const Track& t, int k, double* out) {
    std::vector<const double*> known;
    for (int j = 0; j < k; ++j)
        if (finite2(&t.velocity[2 * static_cast<size_t>(j)])) known.push_back(&t.velocity[2 * static_cast<size_t>(j)]);
    if (known.empty()) {
        out[0] = out[1] = 0.0;
        return;
    }
    row_mean(known, out);
}

// tracking._centre: the mean of the known keypoints, else the box centre.
void centre(const double* kp, int k, const double* box, double* out) {
    std::vector<const double*> known;
    for (int j = 0; j < k; ++j)
        if (finite2(kp + 2 * j)) known.push_back(kp + 2 * j);
    if (!known.empty()) {
        row_mean(known, out);
        return;
    }
    out[0] = box[0] + box[2] / 2, out[1] = box[1] + box[3] / 2;
}

// tracking.box_iou of two xywh boxes; NaN where either is NaN.
double box_iou(const double* a, const double* b) {
    for (int c = 0; c < 4; ++c)
        if (std::isnan(a[c]) || std::isnan(b[c])) return kNaN;
    const double width = std::min(a[0] + a[2], b[0] + b[2]) - std::max(a[0], b[0]);
    const double height = std::min(a[1] + a[3], b[1] + b[3]) - std::max(a[1], b[1]);
    const double inter = std::max(width, 0.0) * std::max(height, 0.0);
    const double uni = a[2] * a[3] + b[2] * b[3] - inter;
    if (std::isnan(uni)) return kNaN;
    return uni > 0 ? inter / uni : 0.0;
}

struct Assignment {
    std::vector<std::pair<TrackPtr, int>> matches;
    std::vector<TrackPtr> unmatched_tracks;
    std::vector<int> unmatched_poses;
};

// tracking._hungarian: least-cost one-to-one assignment, NaN cost: may not match.
Assignment hungarian(const std::vector<TrackPtr>& tracks, const std::vector<int>& dets,
                      const std::vector<double>& cost) {
    const int t = static_cast<int>(tracks.size()), d = static_cast<int>(dets.size());
    std::vector<double> finite(cost.size());
    for (size_t i = 0; i < cost.size(); ++i) finite[i] = std::isfinite(cost[i]) ? cost[i] : kForbidden;
    std::vector<bool> row_used(static_cast<size_t>(t)), col_used(static_cast<size_t>(d));
    Assignment a;
    for (const auto& [r, c] : linear_sum_assignment(finite, t, d)) {
        if (!std::isfinite(cost[static_cast<size_t>(r) * d + c])) continue;
        a.matches.emplace_back(tracks[static_cast<size_t>(r)], dets[static_cast<size_t>(c)]);
        row_used[static_cast<size_t>(r)] = col_used[static_cast<size_t>(c)] = true;
    }
    for (int r = 0; r < t; ++r)
        if (!row_used[static_cast<size_t>(r)]) a.unmatched_tracks.push_back(tracks[static_cast<size_t>(r)]);
    for (int c = 0; c < d; ++c)
        if (!col_used[static_cast<size_t>(c)]) a.unmatched_poses.push_back(dets[static_cast<size_t>(c)]);
    return a;
}

}  // namespace

void TrackerConfig::validate() const {
    auto bad = [](const std::string& what) { throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "tracker: " + what); };
    auto str = [](double v) { return std::to_string(v); };
    if (max_animals < 0) bad("max_animals must be positive (0: open-ended), got " + std::to_string(max_animals));
    if (!(min_similarity >= 0 && min_similarity <= 1))
        bad("min_similarity must be in [0, 1], got " + str(min_similarity));
    if (!(oks_weight >= 0) || !(iou_weight >= 0) || !(oks_weight + iou_weight > 0))
        bad("oks_weight " + str(oks_weight) + " and iou_weight " + str(iou_weight) + " must be >= 0 and not both 0");
    for (double s : oks_sigmas)
        if (!(s > 0)) bad("oks_sigmas must be positive numbers, got " + str(s));
    if (!(position_gain > 0 && position_gain <= 1)) bad("position_gain must be in (0, 1], got " + str(position_gain));
    if (!(velocity_gain > 0 && velocity_gain <= 1)) bad("velocity_gain must be in (0, 1], got " + str(velocity_gain));
    if (!(velocity_rigidity >= 0 && velocity_rigidity <= 1))
        bad("velocity_rigidity must be in [0, 1], got " + str(velocity_rigidity));
    if (motion_horizon < 0 || max_age < 0)
        bad("motion_horizon and max_age must be >= 0 frames, got " + std::to_string(motion_horizon) + " and " +
            std::to_string(max_age));
    if (new_track_after < 1) bad("new_track_after must be >= 1 frame, got " + std::to_string(new_track_after));
    if (!(ambiguity_margin >= 0)) bad("ambiguity_margin must be >= 0 (0: off), got " + str(ambiguity_margin));
    if (!(lost_scale_growth >= 0)) bad("lost_scale_growth must be >= 0, got " + str(lost_scale_growth));
    if (!(fps > 0) || !(min_cutoff > 0) || !(d_cutoff > 0) || !(beta >= 0))
        bad("one-euro settings need fps, min_cutoff, d_cutoff > 0 and beta >= 0; got fps=" + str(fps) +
            ", min_cutoff=" + str(min_cutoff) + ", d_cutoff=" + str(d_cutoff) + ", beta=" + str(beta));
}

struct Tracker::State {
    TrackerConfig config;
    std::vector<TrackPtr> confirmed;  // tracks that hold an id
    std::vector<TrackPtr> tentative;  // unmatched poses waiting new_track_after frames
    int64_t next_id = 0;
    std::optional<int> last_frame;
    int num_keypoints = 0;  // 0: not known yet

    explicit State(const TrackerConfig& c) : config(c) {}

    int k() const { return num_keypoints; }

    double sigma(int j) const {
        return config.oks_sigmas.empty() ? kDefaultOksSigma : config.oks_sigmas[static_cast<size_t>(j)];
    }

    int steps(const Track& t, int frame) const {
        if (!config.use_motion) return 0;
        return std::min(frame - t.last_frame, std::max(config.motion_horizon, 1));
    }

    // tracking.Tracker._predicted: the keypoints moved on by a blend of their own and the mean velocity.
    std::vector<double> predicted(const Track& t, int frame) const {
        double mean[2];
        mean_velocity(t, k(), mean);
        const double rigid = config.velocity_rigidity;
        const int n = steps(t, frame);
        std::vector<double> out(t.keypoints.size());
        for (size_t i = 0; i < out.size(); ++i) {
            const double own = std::isfinite(t.velocity[i]) ? t.velocity[i] : mean[i % 2];
            out[i] = t.keypoints[i] + ((1 - rigid) * own + rigid * mean[i % 2]) * n;
        }
        return out;
    }

    void predicted_box(const Track& t, int frame, double* out) const {
        if (!t.has_box) {
            std::fill(out, out + 4, kNaN);
            return;
        }
        double mean[2];
        mean_velocity(t, k(), mean);
        const int n = steps(t, frame);
        out[0] = t.box[0] + mean[0] * n, out[1] = t.box[1] + mean[1] * n;
        out[2] = t.box[2] + 0.0, out[3] = t.box[3] + 0.0;
    }

    // tracking.Tracker._scale: the OKS scale s², wider the longer the track is lost or its velocity unknown.
    double scale(const Track& t, int frame) const {
        int uncertain_for = frame - t.last_frame - 1;
        bool any_velocity = false;
        for (double v : t.velocity) any_velocity = any_velocity || std::isfinite(v);
        if (config.use_motion && !any_velocity) uncertain_for += config.motion_horizon;
        const double grow = 1.0 + config.lost_scale_growth * uncertain_for;
        return t.area * (grow * grow);
    }

    // (T, D) weighted OKS / IoU similarity of each track's prediction to each pose, 0 where unknown.
    std::vector<double> similarity(const std::vector<TrackPtr>& tracks, const std::vector<int>& dets,
                                   const PoseSet& poses, int frame) const {
        const int kk = k();
        std::vector<double> sim(tracks.size() * dets.size());
        std::vector<double> per_keypoint(static_cast<size_t>(kk));
        for (size_t ti = 0; ti < tracks.size(); ++ti) {
            const Track& t = *tracks[ti];
            const std::vector<double> pred = predicted(t, frame);
            const double area = scale(t, frame);
            double pbox[4];
            predicted_box(t, frame, pbox);
            for (size_t di = 0; di < dets.size(); ++di) {
                const double* obs = poses.kp(dets[di]);
                int common = 0;
                for (int j = 0; j < kk; ++j) {
                    const double dx = pred[2 * j] - obs[2 * j], dy = pred[2 * j + 1] - obs[2 * j + 1];
                    const double d2 = dx * dx + dy * dy;
                    const double kappa2 = (2.0 * sigma(j)) * (2.0 * sigma(j));
                    const double s = std::exp(-d2 / (2.0 * area * kappa2));
                    per_keypoint[static_cast<size_t>(j)] = std::isfinite(s) ? s : 0.0;
                    common += std::isfinite(s);
                }
                const double oks = common ? numpy_sum(per_keypoint.data(), per_keypoint.size()) / std::max(common, 1)
                                          : kNaN;
                const double iou = box_iou(pbox, poses.box(dets[di]));
                const double weighted = (std::isnan(oks) ? 0.0 : oks) * config.oks_weight +
                                        (std::isnan(iou) ? 0.0 : iou) * config.iou_weight;
                const double weight = (std::isfinite(oks) ? 1.0 : 0.0) * config.oks_weight +
                                      (std::isfinite(iou) ? 1.0 : 0.0) * config.iou_weight;
                sim[ti * dets.size() + di] = weight > 0 ? weighted / weight : 0.0;
            }
        }
        return sim;
    }

    Assignment assign(const std::vector<TrackPtr>& tracks, const std::vector<int>& dets, const PoseSet& poses,
                      int frame) const {
        if (tracks.empty() || dets.empty()) return Assignment{{}, tracks, dets};
        const std::vector<double> sim = similarity(tracks, dets, poses, frame);
        const double floor = std::max(config.min_similarity, 1e-9);
        std::vector<double> cost(sim.size());
        for (size_t i = 0; i < sim.size(); ++i) cost[i] = sim[i] >= floor ? 1.0 - sim[i] : kNaN;
        return hungarian(tracks, dets, cost);
    }

    // The matched tracks that could as well have each other's pose (exchanging two matches' poses would lower their
    // total similarity by less than ambiguity_margin).
    std::set<const Track*> ambiguous(const std::vector<std::pair<TrackPtr, int>>& matches, const PoseSet& poses,
                                     int frame) const {
        std::set<const Track*> out;
        const double margin = config.ambiguity_margin;
        if (matches.size() < 2 || margin <= 0) return out;
        std::vector<TrackPtr> tracks;
        std::vector<int> dets;
        for (const auto& [t, d] : matches) tracks.push_back(t), dets.push_back(d);
        const size_t m = matches.size();
        const std::vector<double> sim = similarity(tracks, dets, poses, frame);  // (M, M)
        for (size_t i = 0; i < m; ++i) {
            for (size_t j = 0; j < m; ++j) {
                if (i == j) continue;
                const double loss = sim[i * m + i] + sim[j * m + j] - sim[i * m + j] - sim[j * m + i];
                if (loss < margin) {
                    out.insert(tracks[i].get());
                    break;
                }
            }
        }
        return out;
    }

    // Lost tracks take the unclaimed poses by least total distance of centres, in units of each track's scale.
    Assignment reidentify(const std::vector<TrackPtr>& lost, const std::vector<int>& dets, const PoseSet& poses,
                          int frame) const {
        std::vector<double> distance(lost.size() * dets.size());
        for (size_t ti = 0; ti < lost.size(); ++ti) {
            const Track& t = *lost[ti];
            double pbox[4], c[2];
            predicted_box(t, frame, pbox);
            centre(predicted(t, frame).data(), k(), pbox, c);
            const double s = std::sqrt(scale(t, frame));
            for (size_t di = 0; di < dets.size(); ++di) {
                double dc[2];
                centre(poses.kp(dets[di]), k(), poses.box(dets[di]), dc);
                const double dx = c[0] - dc[0], dy = c[1] - dc[1];
                distance[ti * dets.size() + di] = std::sqrt(dx * dx + dy * dy) / s;
            }
        }
        return hungarian(lost, dets, distance);
    }

    TrackPtr new_track(const PoseSet& poses, int det, int frame) const {
        const int kk = k();
        double area = poses.area[static_cast<size_t>(det)];
        if (!poses.well_seen[static_cast<size_t>(det)]) {  // a partial view says little about the animal's size
            std::vector<double> sizes;
            for (const TrackPtr& t : confirmed) sizes.push_back(t->area);
            if (!sizes.empty() && std::isfinite(area)) {
                const double median = numpy_median(sizes);
                area = median > area ? median : area;  // Python's max(area, median)
            }
        }
        const double* box = poses.box(det);
        const bool box_ok = finite_box(box);
        if (!std::isfinite(area)) area = box_ok ? box[2] * box[3] : 1.0;  // a pose with a box and no keypoint
        auto t = std::make_shared<Track>();
        t->keypoints.assign(poses.kp(det), poses.kp(det) + 2 * kk);
        t->velocity.assign(2 * static_cast<size_t>(kk), kNaN);
        t->scores.assign(poses.scores.begin() + static_cast<std::ptrdiff_t>(det) * kk,
                         poses.scores.begin() + static_cast<std::ptrdiff_t>(det + 1) * kk);
        t->has_box = box_ok;
        if (box_ok) std::copy(box, box + 4, t->box);
        t->area = std::max(area, 1.0);
        t->last_frame = frame;
        return t;
    }

    // Put `track` on the pose it was re-identified with, its velocity unknown (as a new track's).
    void restart(Track& track, const PoseSet& poses, int det, int frame) const {
        TrackPtr fresh = new_track(poses, det, frame);
        fresh->track_id = track.track_id;
        fresh->smoother = track.smoother;
        if (!poses.well_seen[static_cast<size_t>(det)]) fresh->area = track.area;
        track = *fresh;
    }

    // Move `track` to the pose it matched: the alpha-beta filter of each keypoint.
    void absorb(Track& track, const PoseSet& poses, int det, int frame) const {
        const int kk = k();
        const double* observed = poses.kp(det);
        const double* box = poses.box(det);
        const int steps_now = frame - track.last_frame;
        const std::vector<double> pred = predicted(track, frame);
        std::vector<double> velocity = track.velocity;
        std::vector<double> position(2 * static_cast<size_t>(kk)), keypoints(position.size());
        for (int j = 0; j < kk; ++j) {
            const size_t r = 2 * static_cast<size_t>(j);
            const bool seen = finite2(observed + r);
            const bool known = seen && finite2(&track.keypoints[r]);
            const bool first = known && !finite2(&track.velocity[r]);  // a second sighting: the velocity it shows
            for (size_t c = r; c < r + 2; ++c) {
                const double residual = observed[c] - pred[c];
                if (known) velocity[c] = track.velocity[c] + config.velocity_gain * residual / steps_now;
                if (first) velocity[c] = (observed[c] - track.keypoints[c]) / steps_now;
                position[c] = known ? pred[c] + config.position_gain * residual : observed[c];
                if (first) position[c] = observed[c];
                keypoints[c] = seen ? position[c] : pred[c];
            }
            if (seen) track.scores[static_cast<size_t>(j)] = poses.scores[static_cast<size_t>(det) * kk + j];
        }
        track.keypoints = std::move(keypoints);
        track.velocity = std::move(velocity);
        if (poses.well_seen[static_cast<size_t>(det)])
            track.area = 0.5 * track.area + 0.5 * std::max(poses.area[static_cast<size_t>(det)], 1.0);
        if (finite_box(box)) {
            std::copy(box, box + 4, track.box);
            track.has_box = true;
        } else if (track.has_box) {
            double moved[4];
            predicted_box(track, frame, moved);  // with the velocity just updated, as the Python reference
            std::copy(moved, moved + 4, track.box);
        }
        track.last_frame = frame;
    }

    int64_t free_id() {
        if (config.max_animals == 0) return next_id++;
        for (int64_t i = 0;; ++i) {
            bool taken = false;
            for (const TrackPtr& t : confirmed) taken = taken || t->track_id == i;
            if (!taken) return i;
        }
    }
};

Tracker::Tracker(const TrackerConfig& config) : state_(std::make_unique<State>(config)) { config.validate(); }
Tracker::~Tracker() = default;
Tracker::Tracker(Tracker&&) noexcept = default;
Tracker& Tracker::operator=(Tracker&&) noexcept = default;

const TrackerConfig& Tracker::config() const { return state_->config; }

void Tracker::reset() { state_ = std::make_unique<State>(state_->config); }

TrackedFrame Tracker::update(const double* keypoints, const double* scores, const double* boxes, int n, int k,
                             std::optional<int> frame_index) {
    State& s = *state_;
    const TrackerConfig& cfg = s.config;
    const int frame = frame_index ? *frame_index : (s.last_frame ? *s.last_frame + 1 : 0);
    if (s.last_frame && frame <= *s.last_frame)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT,
                    "frame_index " + std::to_string(frame) + " does not come after the last frame " +
                        std::to_string(*s.last_frame) + "; feed one video's frames in order (reset before the next)");
    if (n < 0 || k < 1) throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "tracker: " + std::to_string(n) + " poses of " +
                                                                       std::to_string(k) + " keypoints");
    if (n) {
        if (!s.num_keypoints) {
            s.num_keypoints = k;
        } else if (k != s.num_keypoints) {
            throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "tracker: poses have " + std::to_string(k) +
                                                           " keypoints, earlier frames " +
                                                           std::to_string(s.num_keypoints) + "; one model per video");
        }
        if (!cfg.oks_sigmas.empty() && static_cast<int>(cfg.oks_sigmas.size()) != k)
            throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "tracker: " + std::to_string(cfg.oks_sigmas.size()) +
                                                           " oks_sigmas for " + std::to_string(k) + " keypoints");
    }
    const size_t nk = static_cast<size_t>(n) * k;

    PoseSet poses;
    poses.k = k;
    poses.keypoints.assign(2 * nk, kNaN);
    poses.scores.resize(nk);
    poses.boxes.assign(4 * static_cast<size_t>(n), kNaN);
    if (boxes) std::copy(boxes, boxes + 4 * static_cast<size_t>(n), poses.boxes.begin());
    std::vector<bool> valid(nk);
    std::vector<double> confidence(static_cast<size_t>(n));
    std::vector<int> usable;
    std::vector<double> row(static_cast<size_t>(k));
    for (int i = 0; i < n; ++i) {
        int seen = 0;
        for (int j = 0; j < k; ++j) {
            const size_t r = static_cast<size_t>(i) * k + j;
            const double score = std::isnan(scores[r]) ? 0.0 : scores[r];
            poses.scores[r] = score;
            valid[r] = finite2(keypoints + 2 * r) && score > cfg.min_keypoint_score;
            row[static_cast<size_t>(j)] = valid[r] ? score : 0.0;
            if (valid[r]) {
                poses.keypoints[2 * r] = keypoints[2 * r], poses.keypoints[2 * r + 1] = keypoints[2 * r + 1];
                ++seen;
            }
        }
        confidence[static_cast<size_t>(i)] = numpy_sum(row.data(), row.size()) / k;
        const double* b = poses.box(i);
        const bool has_box = finite_box(b);
        if (seen || has_box) usable.push_back(i);
        poses.area.push_back(pose_area(poses.kp(i), k));
        poses.well_seen.push_back(seen >= std::max(1, (k + 1) / 2));
    }
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return -confidence[a] < -confidence[b]; });
    std::vector<int> kept;
    int usable_count = 0;
    for (int i : order) {
        if (!(std::find(usable.begin(), usable.end(), i) != usable.end())) continue;
        ++usable_count;
        if (cfg.max_animals == 0 || static_cast<int>(kept.size()) < cfg.max_animals) kept.push_back(i);
    }
    std::vector<int64_t> track_ids(static_cast<size_t>(n), -1);

    // 1. tracks by similarity of each pose to their motion prediction
    Assignment first = s.assign(s.confirmed, kept, poses, frame);
    const std::set<const Track*> ambiguous = s.ambiguous(first.matches, poses, frame);
    // 2. known number of animals, every identity taken: the poses nobody claimed are the lost animals
    std::vector<TrackPtr> lost;
    for (const TrackPtr& t : first.unmatched_tracks)
        if (frame - t->last_frame > 1) lost.push_back(t);
    std::vector<int> detections = first.unmatched_poses;
    std::vector<std::pair<TrackPtr, int>> extra;
    if (cfg.max_animals > 0 && static_cast<int>(s.confirmed.size()) == cfg.max_animals && !lost.empty() &&
        !detections.empty()) {
        Assignment again = s.reidentify(lost, detections, poses, frame);
        extra = std::move(again.matches);
        detections = std::move(again.unmatched_poses);
    }
    for (auto& [track, det] : first.matches) {
        if (ambiguous.count(track.get())) {  // keep to the motion model until the animals part
            track->keypoints = s.predicted(*track, frame);
            track->last_frame = frame;
        } else {
            s.absorb(*track, poses, det, frame);
        }
        track_ids[static_cast<size_t>(det)] = track->track_id;
    }
    for (auto& [track, det] : extra) {  // found again far from where it was lost: its motion starts afresh
        s.restart(*track, poses, det, frame);
        track_ids[static_cast<size_t>(det)] = track->track_id;
    }
    // 3. tentative tracks, then new ones; a tentative track becomes a track after new_track_after frames
    Assignment tentative = s.assign(s.tentative, detections, poses, frame);
    std::vector<std::pair<TrackPtr, int>> pending = tentative.matches;
    for (auto& [track, det] : pending) {
        s.absorb(*track, poses, det, frame);
        track->hits += 1;
    }
    for (int det : tentative.unmatched_poses) pending.emplace_back(s.new_track(poses, det, frame), det);
    auto rank = [&](int det) { return std::find(kept.begin(), kept.end(), det) - kept.begin(); };
    std::stable_sort(pending.begin(), pending.end(),
                     [&](const auto& a, const auto& b) { return rank(a.second) < rank(b.second); });
    s.tentative.clear();  // a tentative track not seen this frame is forgotten: its frames must be consecutive
    for (auto& [track, det] : pending) {
        const bool room = cfg.max_animals == 0 || static_cast<int>(s.confirmed.size()) < cfg.max_animals;
        if (track->hits >= cfg.new_track_after && room) {
            track->track_id = s.free_id();
            s.confirmed.push_back(track);
            track_ids[static_cast<size_t>(det)] = track->track_id;
        } else {
            s.tentative.push_back(track);
        }
    }
    // 4. forget tracks lost for more than max_age frames (their ids are free again)
    s.confirmed.erase(std::remove_if(s.confirmed.begin(), s.confirmed.end(),
                                  [&](const TrackPtr& t) { return frame - t->last_frame > cfg.max_age; }),
                   s.confirmed.end());

    TrackedFrame out;
    out.frame_index = frame;
    out.keypoints.assign(keypoints, keypoints + 2 * nk);
    if (cfg.smooth) {
        for (int det = 0; det < n; ++det) {
            const int64_t id = track_ids[static_cast<size_t>(det)];
            if (id < 0) continue;
            TrackPtr track;
            for (const TrackPtr& t : s.confirmed)
                if (t->track_id == id) track = t;
            if (!track->smoother) track->smoother = std::make_shared<OneEuroFilter>(cfg);
            const std::vector<double> smoothed = (*track->smoother)(poses.kp(det), k, frame);
            for (int j = 0; j < k; ++j) {
                const size_t r = static_cast<size_t>(det) * k + j;
                if (!valid[r]) continue;
                out.keypoints[2 * r] = smoothed[2 * static_cast<size_t>(j)];
                out.keypoints[2 * r + 1] = smoothed[2 * static_cast<size_t>(j) + 1];
            }
        }
    }
    s.last_frame = frame;
    out.track_ids = std::move(track_ids);
    out.kept = std::move(kept);
    out.num_dropped = usable_count - static_cast<int>(out.kept.size());
    return out;
}

}  // namespace tardis
