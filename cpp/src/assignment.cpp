// Shortest augmenting path assignment (Crouse 2016): rows are added one at a time; each finds, by a Dijkstra-like
// search on reduced costs, the cheapest path to a free column, and the dual variables u, v keep the reduced costs
// non-negative. O(n^2 m) for n <= m. Ties go as in scipy: the first column in the search order, preferring a free
// column over an assigned one at equal cost; the search order is the columns from last to first, as scipy keeps
// its list of remaining columns.
#include "assignment.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "error.hpp"

namespace tardis {

namespace {

struct Solver {
    int nr, nc;
    const std::vector<double>& cost;  // nr x nc, nr <= nc
    std::vector<double> u, v, shortest;
    std::vector<int> path, col4row, row4col, remaining;
    std::vector<char> row_done, col_done;

    Solver(const std::vector<double>& c, int rows, int cols)
        : nr(rows), nc(cols), cost(c), u(rows, 0.0), v(cols, 0.0), shortest(cols), path(cols, -1),
          col4row(rows, -1), row4col(cols, -1), remaining(cols), row_done(rows), col_done(cols) {}

    // The free column reached by the cheapest augmenting path from `row`; *min_value its reduced length.
    int augmenting_path(int row, double* min_value) {
        double min_val = 0.0;
        int num_remaining = nc;
        for (int it = 0; it < nc; ++it) remaining[it] = nc - it - 1;
        std::fill(row_done.begin(), row_done.end(), 0);
        std::fill(col_done.begin(), col_done.end(), 0);
        std::fill(shortest.begin(), shortest.end(), std::numeric_limits<double>::infinity());
        int sink = -1, i = row;
        while (sink == -1) {
            int index = -1;
            double lowest = std::numeric_limits<double>::infinity();
            row_done[i] = 1;
            for (int it = 0; it < num_remaining; ++it) {
                const int j = remaining[it];
                const double r = min_val + cost[static_cast<size_t>(i) * nc + j] - u[i] - v[j];
                if (r < shortest[j]) {
                    path[j] = i;
                    shortest[j] = r;
                }
                if (shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == -1)) {
                    lowest = shortest[j];
                    index = it;
                }
            }
            min_val = lowest;
            if (index < 0 || !std::isfinite(min_val)) return -1;  // cannot happen with finite costs
            const int j = remaining[index];
            if (row4col[j] == -1) {
                sink = j;
            } else {
                i = row4col[j];
            }
            col_done[j] = 1;
            remaining[index] = remaining[--num_remaining];
        }
        *min_value = min_val;
        return sink;
    }

    void solve() {
        for (int row = 0; row < nr; ++row) {
            double min_val = 0.0;
            const int sink = augmenting_path(row, &min_val);
            if (sink < 0) throw Error(TARDIS_ERROR_INTERNAL, "assignment: no augmenting path (infeasible costs)");
            u[row] += min_val;  // update the dual variables
            for (int i = 0; i < nr; ++i)
                if (row_done[i] && i != row) u[i] += min_val - shortest[col4row[i]];
            for (int j = 0; j < nc; ++j)
                if (col_done[j]) v[j] -= min_val - shortest[j];
            for (int j = sink;;) {  // augment along the path back to `row`
                const int i = path[j];
                row4col[j] = i;
                std::swap(col4row[i], j);
                if (i == row) break;
            }
        }
    }
};

}  // namespace

std::vector<std::pair<int, int>> linear_sum_assignment(const std::vector<double>& cost, int rows, int cols) {
    if (rows < 0 || cols < 0 || cost.size() != static_cast<size_t>(rows) * cols)
        throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "assignment: cost has " + std::to_string(cost.size()) +
                                                       " values for " + std::to_string(rows) + " x " +
                                                       std::to_string(cols));
    for (double c : cost)
        if (!std::isfinite(c))
            throw Error(TARDIS_ERROR_INVALID_ARGUMENT, "assignment: cost " + std::to_string(c) + " is not finite");
    std::vector<std::pair<int, int>> pairs;
    if (rows == 0 || cols == 0) return pairs;
    const bool transpose = rows > cols;  // the solver wants rows <= cols
    std::vector<double> t;
    if (transpose) {
        t.resize(cost.size());
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
                t[static_cast<size_t>(c) * rows + r] = cost[static_cast<size_t>(r) * cols + c];
    }
    Solver solver(transpose ? t : cost, transpose ? cols : rows, transpose ? rows : cols);
    solver.solve();
    for (int i = 0; i < solver.nr; ++i)
        pairs.emplace_back(transpose ? solver.col4row[i] : i, transpose ? i : solver.col4row[i]);
    std::sort(pairs.begin(), pairs.end());
    return pairs;
}

}  // namespace tardis
