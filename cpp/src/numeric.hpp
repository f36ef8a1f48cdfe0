// Reductions that round as NumPy's do, so decisions taken on sums and means (which animal is stronger, which pose
// a track takes) come out the same as in the Python reference even when two candidates are nearly tied.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace tardis {

// np.add.reduce over a contiguous run of doubles: pairwise summation with 8 accumulators per block of up to 128.
inline double numpy_sum(const double* a, size_t n) {
    if (n < 8) {
        double sum = 0.0;
        for (size_t i = 0; i < n; ++i) sum += a[i];
        return sum;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        const size_t blocks = n - n % 8;
        for (size_t i = 8; i < blocks; i += 8)
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (size_t i = blocks; i < n; ++i) sum += a[i];
        return sum;
    }
    size_t half = n / 2;
    half -= half % 8;
    return numpy_sum(a, half) + numpy_sum(a + half, n - half);
}

inline double numpy_mean(const std::vector<double>& a) {
    return numpy_sum(a.data(), a.size()) / static_cast<double>(a.size());
}

// np.median: the middle value, or the mean of the two middle values.
inline double numpy_median(std::vector<double> a) {
    const size_t n = a.size(), mid = n / 2;
    std::nth_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(mid), a.end());
    const double upper = a[mid];
    if (n % 2) return upper;
    const double lower = *std::max_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(mid));
    return (lower + upper) / 2.0;  // np.mean of the two: their sum / 2
}

}  // namespace tardis
