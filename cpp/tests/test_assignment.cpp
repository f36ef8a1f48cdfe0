// The tracker's assignment solver: least total cost against brute force over every assignment of small random
// matrices (square and rectangular, with and without ties), and the very pairs scipy.optimize.linear_sum_assignment
// picks (make_multi_reference.py's assignment.txt), ties included.
//
// usage: test_assignment <reference_dir>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "assignment.hpp"
#include "check.hpp"
#include "error.hpp"

namespace {

using Pairs = std::vector<std::pair<int, int>>;

double total(const std::vector<double>& cost, int cols, const Pairs& pairs) {
    double sum = 0.0;
    for (const auto& [r, c] : pairs) sum += cost[static_cast<size_t>(r) * cols + c];
    return sum;
}

// The least total cost over all one-to-one assignments of min(rows, cols) pairs.
double brute_force(const std::vector<double>& cost, int rows, int cols) {
    const bool by_rows = rows <= cols;
    const int small = std::min(rows, cols), large = std::max(rows, cols);
    std::vector<int> perm(static_cast<size_t>(large));
    std::iota(perm.begin(), perm.end(), 0);
    double best = INFINITY;
    do {  // the first `small` entries of each permutation of the larger side
        double sum = 0.0;
        for (int i = 0; i < small; ++i)
            sum += by_rows ? cost[static_cast<size_t>(i) * cols + perm[i]]
                           : cost[static_cast<size_t>(perm[i]) * cols + i];
        best = std::min(best, sum);
    } while (std::next_permutation(perm.begin(), perm.end()));
    return best;
}

void check_valid(const Pairs& pairs, int rows, int cols, const std::string& where) {
    CHECK_MSG(static_cast<int>(pairs.size()) == std::min(rows, cols), where + ": wrong number of pairs");
    std::vector<int> row_used(static_cast<size_t>(rows)), col_used(static_cast<size_t>(cols));
    for (const auto& [r, c] : pairs) {
        CHECK_MSG(r >= 0 && r < rows && c >= 0 && c < cols && !row_used[r]++ && !col_used[c]++,
                  where + ": a row or column is used twice or out of range");
    }
    CHECK_MSG(std::is_sorted(pairs.begin(), pairs.end()), where + ": pairs are not ordered by row");
}

void test_brute_force() {
    std::mt19937 rng(7);
    int cases = 0;
    for (int rows = 1; rows <= 6; ++rows) {
        for (int cols = 1; cols <= 6; ++cols) {
            for (int rep = 0; rep < 20; ++rep) {
                std::vector<double> cost(static_cast<size_t>(rows) * cols);
                std::uniform_real_distribution<double> real(-5.0, 5.0);
                std::uniform_int_distribution<int> small(0, 2);
                for (double& c : cost) c = rep % 2 ? real(rng) : small(rng);  // even reps: many ties
                const Pairs pairs = tardis::linear_sum_assignment(cost, rows, cols);
                const std::string where =
                    std::to_string(rows) + "x" + std::to_string(cols) + " #" + std::to_string(rep);
                check_valid(pairs, rows, cols, where);
                const double best = brute_force(cost, rows, cols);
                CHECK_MSG(std::fabs(total(cost, cols, pairs) - best) <= 1e-9,
                          where + ": cost " + std::to_string(total(cost, cols, pairs)) + ", optimum " +
                              std::to_string(best));
                ++cases;
            }
        }
    }
    CHECK(tardis::linear_sum_assignment({}, 0, 3).empty());
    bool refused = false;
    try {
        tardis::linear_sum_assignment({1.0, NAN}, 1, 2);
    } catch (const tardis::Error& e) {
        refused = e.status() == TARDIS_ERROR_INVALID_ARGUMENT;
    }
    CHECK_MSG(refused, "a NaN cost must be refused");
    std::printf("assignment: %d random matrices at the brute-force optimum\n", cases);
}

void test_scipy(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    int cases = 0, same = 0;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        int rows, cols;
        f >> rows >> cols;
        std::vector<double> cost(static_cast<size_t>(rows) * cols);
        for (double& c : cost) f >> c;
        CHECK_MSG(!f.fail(), "malformed line: " + line);
        std::getline(in, line);
        std::istringstream g(line);
        Pairs expected;
        for (int r, c; g >> r >> c;) expected.emplace_back(r, c);
        const Pairs pairs = tardis::linear_sum_assignment(cost, rows, cols);
        same += pairs == expected;
        CHECK_MSG(pairs == expected, "case " + std::to_string(cases) + " (" + std::to_string(rows) + "x" +
                                         std::to_string(cols) + "): pairs differ from scipy's " + line);
        ++cases;
    }
    CHECK_MSG(cases >= 100, path + " holds too few cases; did the reference fixture run?");
    std::printf("assignment: %d of %d matrices paired exactly as scipy\n", same, cases);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <reference_dir>\n", argv[0]);
        return 2;
    }
    test_brute_force();
    test_scipy(std::string(argv[1]) + "/assignment.txt");
    return tardis::test::finish("test_assignment");
}
