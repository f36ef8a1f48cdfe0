// The C++ tracker against tardis_edge.tracking.Tracker (make_tracker_reference.py): the same detections in, the
// same track ids, kept poses and dropped count out, frame for frame, under several configurations (known and
// open-ended number of animals, boxes, no motion model, smoothing, frame gaps, per-keypoint sigmas); the output
// keypoints (one-euro smoothed where on) within 1e-9 px. Also the tracker's own checks on its input.
//
// usage: test_tracking <reference_dir>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "error.hpp"
#include "tracking.hpp"

namespace {

std::vector<double> numbers(const std::string& line) {
    std::istringstream in(line);
    std::vector<double> out;
    for (std::string token; in >> token;) out.push_back(token == "nan" ? NAN : std::stod(token));
    return out;
}

void test_reference(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::string name;
    std::optional<tardis::Tracker> tracker;
    int configs = 0, frames = 0, ids = 0, tracked = 0, worst_frame_errors = 0;
    double worst = 0.0;
    while (std::getline(in, line)) {
        std::istringstream head(line);
        std::string tag;
        head >> tag;
        if (tag == "config") {
            tardis::TrackerConfig c;
            int use_motion = 1, smooth = 0, boxes = 0, sigmas = 0;
            head >> name >> c.max_animals >> use_motion >> c.ambiguity_margin >> c.new_track_after >> smooth >> boxes >>
                c.max_age >> sigmas;
            c.oks_sigmas.resize(static_cast<size_t>(sigmas));
            for (double& s : c.oks_sigmas) head >> s;
            CHECK_MSG(!head.fail(), "malformed line: " + line);
            c.use_motion = use_motion != 0;
            c.smooth = smooth != 0;
            tracker.emplace(c);
            ++configs;
            continue;
        }
        int frame = 0, n = 0, k = 0;
        head >> frame >> n >> k;
        CHECK_MSG(tag == "frame" && !head.fail() && tracker, "malformed line: " + line);
        std::getline(in, line);
        const std::vector<double> keypoints = numbers(line);
        std::getline(in, line);
        const std::vector<double> scores = numbers(line);
        std::getline(in, line);
        const std::vector<double> boxes = line == "none" ? std::vector<double>{} : numbers(line);
        std::getline(in, line);
        std::istringstream result(line);
        std::string word;
        std::vector<int64_t> ref_ids(static_cast<size_t>(n));
        int m = 0, ref_dropped = 0;
        result >> word;
        for (int64_t& id : ref_ids) result >> id;
        result >> word >> m;
        std::vector<int> ref_kept(static_cast<size_t>(m));
        for (int& i : ref_kept) result >> i;
        result >> word >> ref_dropped;
        std::getline(in, line);
        const std::vector<double> ref_out = numbers(line);

        const tardis::TrackedFrame out = tracker->update(keypoints.data(), scores.data(),
                                                         boxes.empty() ? nullptr : boxes.data(), n, k, frame);
        const std::string where = name + " frame " + std::to_string(frame);
        std::string got;
        for (int64_t id : out.track_ids) got += std::to_string(id) + " ";
        CHECK_MSG(out.track_ids == ref_ids, where + ": ids " + got + "vs Python " + line);
        CHECK_MSG(out.kept == ref_kept && out.num_dropped == ref_dropped, where + ": kept or dropped differ");
        CHECK_MSG(out.frame_index == frame, where + ": frame index");
        double err = 0.0;
        for (size_t i = 0; i < ref_out.size() && i < out.keypoints.size(); ++i) {
            if (std::isnan(ref_out[i]) != std::isnan(out.keypoints[i])) err = INFINITY;
            else if (!std::isnan(ref_out[i])) err = std::max(err, std::fabs(ref_out[i] - out.keypoints[i]));
        }
        CHECK_MSG(out.keypoints.size() == ref_out.size() && err <= 1e-9,
                  where + ": output keypoints differ by " + std::to_string(err));
        worst = std::max(worst, err);
        worst_frame_errors += out.track_ids != ref_ids;
        for (int64_t id : ref_ids) tracked += id >= 0;
        ids += n;
        ++frames;
    }
    CHECK_MSG(configs >= 5 && frames >= 500 && tracked > 300, path + " holds too little; did the fixture run?");
    std::printf("tracker: %d configurations, %d frames, %d poses (%d tracked): ids as in Python on %d frames, output "
                "keypoints within %.1e px\n",
                configs, frames, ids, tracked, frames - worst_frame_errors, worst);
}

template <typename F>
void expect_invalid(F&& f, const std::string& needle) {
    try {
        f();
    } catch (const tardis::Error& e) {
        const bool mentions = std::string(e.what()).find(needle) != std::string::npos;
        CHECK_MSG(e.status() == TARDIS_ERROR_INVALID_ARGUMENT && mentions,
                  std::string("message \"") + e.what() + "\" lacks \"" + needle + "\"");
        return;
    }
    CHECK_MSG(false, "no error for " + needle);
}

void test_checks() {
    tardis::TrackerConfig bad;
    bad.min_similarity = 2.0;
    expect_invalid([&] { tardis::Tracker t(bad); }, "min_similarity must be in [0, 1]");
    bad = tardis::TrackerConfig{};
    bad.velocity_rigidity = -0.5;
    expect_invalid([&] { tardis::Tracker t(bad); }, "velocity_rigidity");

    tardis::Tracker tracker{tardis::TrackerConfig{}};
    const double kp[4] = {1, 2, 3, 4}, sc[2] = {0.9, 0.9};
    tracker.update(kp, sc, nullptr, 1, 2, 5);
    expect_invalid([&] { tracker.update(kp, sc, nullptr, 1, 2, 5); }, "does not come after the last frame 5");
    expect_invalid([&] { tracker.update(kp, sc, nullptr, 2, 1, 6); }, "poses have 1 keypoints, earlier frames 2");
    const tardis::TrackedFrame next = tracker.update(kp, sc, nullptr, 1, 2, std::nullopt);  // the last + 1
    CHECK(next.frame_index == 6 && next.track_ids.size() == 1 && next.track_ids[0] == 0);
    const tardis::TrackedFrame none = tracker.update(nullptr, nullptr, nullptr, 0, 2, 7);  // an empty frame
    CHECK(none.track_ids.empty() && none.num_dropped == 0);
    tracker.reset();
    CHECK(tracker.update(kp, sc, nullptr, 1, 2, 0).track_ids[0] == 0);  // ids start again after a reset
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <reference_dir>\n", argv[0]);
        return 2;
    }
    test_reference(std::string(argv[1]) + "/tracker.txt");
    test_checks();
    return tardis::test::finish("test_tracking");
}
