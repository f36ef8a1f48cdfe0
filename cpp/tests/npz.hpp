// Test support: read float32 arrays from NumPy .npz files (zip, stored or deflate-compressed members, zip64
// extras as numpy writes them) with no dependency: a small inflate (RFC 1951) and a .npy header parser.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tardis::test {

struct Array {
    std::vector<int64_t> shape;
    std::vector<float> data;  // C order
    int64_t size() const;
};

// All members of an .npz file by name without ".npy"; throws std::runtime_error naming the file and the problem.
std::map<std::string, Array> load_npz(const std::string& path);

// Decompress a raw deflate stream (no zlib header); throws std::runtime_error on malformed data.
std::vector<uint8_t> inflate(const uint8_t* data, size_t size, size_t expected_size);

// CRC-32 (zip's) of a buffer.
uint32_t crc32(const uint8_t* data, size_t size);

// Parse one .npy blob holding little-endian float32 ('<f4'), C order.
Array parse_npy(const std::vector<uint8_t>& blob, const std::string& name);

}  // namespace tardis::test
