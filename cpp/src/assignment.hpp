// Least-cost one-to-one assignment (the rectangular linear sum assignment problem), for the tracker: the shortest
// augmenting path algorithm of Crouse (IEEE TAES 2016), the one scipy.optimize.linear_sum_assignment implements,
// with the same choice among equal-cost alternatives, so tracks take the same poses as in the Python reference.
#pragma once

#include <utility>
#include <vector>

namespace tardis {

// `cost` (rows x cols, row-major, finite) -> the pairs (row, col) of a least-cost assignment of min(rows, cols)
// pairs, ordered by row. Throws Error(INVALID_ARGUMENT) for a non-finite cost.
std::vector<std::pair<int, int>> linear_sum_assignment(const std::vector<double>& cost, int rows, int cols);

}  // namespace tardis
