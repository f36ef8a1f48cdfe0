// The multi-animal building blocks against their Python references (make_multi_reference.py):
// finder.decode_finder on awkward finder outputs (exact: the same peaks in the same order, positions, sizes to 1e-9),
// multi.deduplicate (the same poses kept, in order, and the same count dropped) and predict.box_from_prediction
// (the same refine boxes, 1e-9 px) on random poses with near-duplicates, keypoints on the refine grid and scores at
// the confidence threshold.
//
// usage: test_multi_units <reference_dir>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "finder.hpp"
#include "multi.hpp"
#include "npz.hpp"

namespace {

double parse_number(const std::string& s) { return s == "nan" ? NAN : std::stod(s); }

std::vector<double> numbers(const std::string& line) {
    std::istringstream in(line);
    std::vector<double> out;
    std::string token;
    while (in >> token) out.push_back(parse_number(token));
    return out;
}

bool close(double a, double b, double tol) { return (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= tol; }

void test_finder_decode(const std::string& dir) {
    const auto maps = tardis::test::load_npz(dir + "/finder_decode.npz");
    std::ifstream in(dir + "/finder_decode.txt");
    std::string line;
    int cases = 0, peaks = 0;
    while (std::getline(in, line)) {
        std::istringstream head(line);
        std::string tag, name;
        double min_score, min_distance, stride;
        int max_animals, frames;
        head >> tag >> name >> min_score >> max_animals >> min_distance >> stride >> frames;
        CHECK_MSG(tag == "case" && !head.fail(), "malformed line: " + line);
        const tardis::test::Array& a = maps.at(name);
        const int h = static_cast<int>(a.shape[2]), w = static_cast<int>(a.shape[3]);
        for (int f = 0; f < frames; ++f) {
            std::getline(in, line);
            const int expected = std::stoi(line.substr(6));  // "frame <n>"
            const std::vector<tardis::FinderPeak> found = tardis::decode_finder(
                a.data.data() + static_cast<size_t>(f) * 3 * h * w, h, w, stride, min_score, max_animals, min_distance);
            const std::string where = name + " frame " + std::to_string(f) + " (min_score " +
                                      std::to_string(min_score) + ", max " + std::to_string(max_animals) +
                                      ", distance " + std::to_string(min_distance) + ", stride " +
                                      std::to_string(stride) + ")";
            CHECK_MSG(static_cast<int>(found.size()) == expected,
                      where + ": " + std::to_string(found.size()) + " peaks, Python " + std::to_string(expected));
            for (int p = 0; p < expected; ++p) {
                std::getline(in, line);
                const std::vector<double> ref = numbers(line);  // cx cy w h score
                if (p >= static_cast<int>(found.size())) continue;
                const tardis::FinderPeak& q = found[static_cast<size_t>(p)];
                CHECK_MSG(q.cx == ref[0] && q.cy == ref[1] && q.score == ref[4],
                          where + " peak " + std::to_string(p) + ": (" + std::to_string(q.cx) + ", " +
                              std::to_string(q.cy) + ", " + std::to_string(q.score) + ") vs " + line);
                CHECK_MSG(close(q.width, ref[2], 1e-9) && close(q.height, ref[3], 1e-9),
                          where + " peak " + std::to_string(p) + " size differs: " + line);
                ++peaks;
            }
        }
        ++cases;
    }
    CHECK_MSG(cases >= 10 && peaks >= 30, "too few finder cases (" + std::to_string(cases) + ") or peaks (" +
                                              std::to_string(peaks) + "): did the reference fixture run?");
    std::printf("finder decode: %d cases, %d peaks as in Python\n", cases, peaks);
}

void test_deduplicate_and_refine_boxes(const std::string& dir) {
    std::ifstream in(dir + "/multi_units.txt");
    std::string line;
    int cases = 0, duplicates = 0, boxes = 0;
    while (std::getline(in, line)) {
        std::istringstream head(line);
        std::string tag;
        int id, m, k, input_w, input_h;
        tardis::MultiConfig config;
        tardis::RefineRule rule;
        head >> tag >> id >> m >> k >> config.min_keypoints >> config.duplicate_distance >> config.max_animals >>
            rule.min_score >> input_w >> input_h >> rule.padding >> rule.min_size;
        CHECK_MSG(tag == "case" && !head.fail(), "malformed line: " + line);
        tardis::Poses poses;
        poses.k = k;
        std::getline(in, line);
        poses.keypoints = numbers(line);
        std::getline(in, line);
        for (double s : numbers(line)) poses.scores.push_back(static_cast<float>(s));  // float32 values, exact
        std::getline(in, line);
        const std::vector<double> fb = numbers(line);
        const tardis::CropBox fallback{fb[0], fb[1], fb[2], fb[3]};
        std::getline(in, line);
        std::istringstream kept_line(line);
        std::string word;
        int n_kept = 0, ref_dropped = 0;
        kept_line >> word >> n_kept;
        std::vector<int> ref_kept(static_cast<size_t>(n_kept));
        for (int& i : ref_kept) kept_line >> i;
        kept_line >> word >> ref_dropped;

        int dropped = -1;
        const std::vector<int> kept = tardis::deduplicate(poses, config, rule.min_score, &dropped);
        const std::string where = "case " + std::to_string(id);
        CHECK_MSG(kept == ref_kept && dropped == ref_dropped,
                  where + ": deduplicate differs from Python (" + line + ")");
        duplicates += m - n_kept - ref_dropped;
        for (int i = 0; i < m; ++i) {
            std::getline(in, line);
            const std::vector<double> ref = numbers(line);
            const tardis::CropBox b = tardis::box_from_prediction(poses.keypoints_of(static_cast<size_t>(i)),
                                                                  poses.scores_of(static_cast<size_t>(i)), k, fallback,
                                                                  input_w, input_h, rule);
            CHECK_MSG(close(b.cx, ref[0], 1e-9) && close(b.cy, ref[1], 1e-9) && close(b.width, ref[2], 1e-9) &&
                          close(b.height, ref[3], 1e-9),
                      where + " pose " + std::to_string(i) + ": refine box (" + std::to_string(b.cx) + ", " +
                          std::to_string(b.cy) + ", " + std::to_string(b.width) + ", " + std::to_string(b.height) +
                          ") vs Python " + line);
            ++boxes;
        }
        ++cases;
    }
    CHECK_MSG(cases >= 50 && duplicates > 0, "too few cases (" + std::to_string(cases) + ") or no duplicate removed");
    std::printf("deduplicate: %d cases (%d duplicates removed), %d refine boxes as in Python\n", cases, duplicates,
                boxes);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <reference_dir>\n", argv[0]);
        return 2;
    }
    test_finder_decode(argv[1]);
    test_deduplicate_and_refine_boxes(argv[1]);
    return tardis::test::finish("test_multi_units");
}
