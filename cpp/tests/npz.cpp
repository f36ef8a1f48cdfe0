// .npz reader for the tests (see npz.hpp). The inflate decoder walks canonical Huffman codes one bit at a time:
// slow in theory, a few milliseconds for the 2 MB golden file.
#include "npz.hpp"

#include <array>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tardis::test {

int64_t Array::size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

uint32_t crc32(const uint8_t* data, size_t size) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

namespace {

constexpr int kMaxBits = 15;

class BitReader {
public:
    BitReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

    uint32_t bits(int n) {
        uint32_t value = bit_buffer_;
        while (bit_count_ < n) {
            if (pos_ >= size_) throw std::runtime_error("deflate stream ends early");
            value |= static_cast<uint32_t>(data_[pos_++]) << bit_count_;
            bit_count_ += 8;
        }
        bit_buffer_ = value >> n;
        bit_count_ -= n;
        return value & ((1u << n) - 1);
    }

    void align_to_byte() {
        bit_buffer_ = 0;
        bit_count_ = 0;
    }
    const uint8_t* bytes(size_t n) {
        if (pos_ + n > size_) throw std::runtime_error("deflate stored block runs past the data");
        const uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    uint32_t bit_buffer_ = 0;
    int bit_count_ = 0;
};

// Canonical Huffman code: number of codes per length, symbols ordered by code.
struct Huffman {
    std::array<uint16_t, kMaxBits + 1> count{};
    std::vector<uint16_t> symbol;

    Huffman(const uint8_t* lengths, int n) : symbol(static_cast<size_t>(n)) {
        for (int s = 0; s < n; ++s) ++count[lengths[s]];
        std::array<uint16_t, kMaxBits + 2> offset{};
        for (int len = 1; len <= kMaxBits; ++len) offset[len + 1] = static_cast<uint16_t>(offset[len] + count[len]);
        for (int s = 0; s < n; ++s)
            if (lengths[s]) symbol[offset[lengths[s]]++] = static_cast<uint16_t>(s);
    }

    int decode(BitReader& in) const {
        int code = 0, first = 0, index = 0;
        for (int len = 1; len <= kMaxBits; ++len) {
            code |= static_cast<int>(in.bits(1));
            const int n = count[len];
            if (code - n < first) return symbol[index + (code - first)];
            index += n;
            first = (first + n) << 1;
            code <<= 1;
        }
        throw std::runtime_error("invalid Huffman code in deflate stream");
    }
};

const uint16_t kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                  31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
const uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
const uint16_t kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
const uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

void inflate_codes(BitReader& in, const Huffman& lit, const Huffman& dist, std::vector<uint8_t>& out) {
    while (true) {
        const int sym = lit.decode(in);
        if (sym < 256) {
            out.push_back(static_cast<uint8_t>(sym));
        } else if (sym == 256) {
            return;
        } else {
            const int li = sym - 257;
            if (li >= 29) throw std::runtime_error("invalid length symbol in deflate stream");
            const size_t length = kLengthBase[li] + in.bits(kLengthExtra[li]);
            const int di = dist.decode(in);
            if (di >= 30) throw std::runtime_error("invalid distance symbol in deflate stream");
            const size_t distance = kDistBase[di] + in.bits(kDistExtra[di]);
            if (distance > out.size()) throw std::runtime_error("deflate distance reaches before the output start");
            const size_t from = out.size() - distance;
            for (size_t i = 0; i < length; ++i) out.push_back(out[from + i]);  // overlapping copies repeat bytes
        }
    }
}

}  // namespace

std::vector<uint8_t> inflate(const uint8_t* data, size_t size, size_t expected_size) {
    BitReader in(data, size);
    std::vector<uint8_t> out;
    out.reserve(expected_size);
    bool last = false;
    while (!last) {
        last = in.bits(1) != 0;
        const uint32_t type = in.bits(2);
        if (type == 0) {  // stored
            in.align_to_byte();
            const uint8_t* h = in.bytes(4);
            const unsigned len = h[0] | (h[1] << 8), nlen = h[2] | (h[3] << 8);
            if ((len ^ 0xFFFFu) != nlen) throw std::runtime_error("deflate stored block length check failed");
            const uint8_t* p = in.bytes(len);
            out.insert(out.end(), p, p + len);
        } else if (type == 1) {  // fixed Huffman codes
            static const auto fixed = [] {
                std::array<uint8_t, 288> lit{};
                for (int i = 0; i < 288; ++i) lit[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
                std::array<uint8_t, 30> dist{};
                dist.fill(5);
                return std::make_pair(Huffman(lit.data(), 288), Huffman(dist.data(), 30));
            }();
            inflate_codes(in, fixed.first, fixed.second, out);
        } else if (type == 2) {  // dynamic Huffman codes
            const int nlen = static_cast<int>(in.bits(5)) + 257;
            const int ndist = static_cast<int>(in.bits(5)) + 1;
            const int ncode = static_cast<int>(in.bits(4)) + 4;
            static const int order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
            std::array<uint8_t, 19> code_lengths{};
            for (int i = 0; i < ncode; ++i) code_lengths[order[i]] = static_cast<uint8_t>(in.bits(3));
            const Huffman code(code_lengths.data(), 19);
            std::array<uint8_t, 320> lengths{};
            for (int i = 0; i < nlen + ndist;) {
                int sym = code.decode(in);
                if (sym < 16) {
                    lengths[i++] = static_cast<uint8_t>(sym);
                    continue;
                }
                uint8_t value = 0;
                int repeat;
                if (sym == 16) {
                    if (i == 0) throw std::runtime_error("deflate repeat with no previous length");
                    value = lengths[i - 1];
                    repeat = 3 + static_cast<int>(in.bits(2));
                } else if (sym == 17) {
                    repeat = 3 + static_cast<int>(in.bits(3));
                } else {
                    repeat = 11 + static_cast<int>(in.bits(7));
                }
                if (i + repeat > nlen + ndist) throw std::runtime_error("deflate code lengths overflow");
                while (repeat--) lengths[i++] = value;
            }
            const Huffman lit(lengths.data(), nlen), dist(lengths.data() + nlen, ndist);
            inflate_codes(in, lit, dist, out);
        } else {
            throw std::runtime_error("invalid deflate block type 3");
        }
    }
    return out;
}

namespace {

uint32_t u16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t u32(const uint8_t* p) { return u16(p) | (u16(p + 2) << 16); }
uint64_t u64(const uint8_t* p) { return u32(p) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

// Value of `key` in a .npy header dict such as "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 17), }".
std::string header_field(const std::string& header, const std::string& key, const std::string& name) {
    const size_t at = header.find("'" + key + "':");
    if (at == std::string::npos) throw std::runtime_error(name + ": .npy header has no '" + key + "'");
    size_t start = at + key.size() + 3;
    while (start < header.size() && header[start] == ' ') ++start;
    size_t end = start;
    if (header[start] == '(') {
        end = header.find(')', start) + 1;
    } else if (header[start] == '\'') {
        end = header.find('\'', start + 1) + 1;
    } else {
        end = header.find_first_of(",}", start);
    }
    return header.substr(start, end - start);
}

}  // namespace

Array parse_npy(const std::vector<uint8_t>& blob, const std::string& name) {
    if (blob.size() < 10 || std::memcmp(blob.data(), "\x93NUMPY", 6) != 0)
        throw std::runtime_error(name + " is not a .npy array");
    const int major = blob[6];
    const size_t header_len = major == 1 ? u16(&blob[8]) : u32(&blob[8]);
    const size_t header_start = major == 1 ? 10 : 12;
    if (header_start + header_len > blob.size()) throw std::runtime_error(name + ": truncated .npy header");
    const std::string header(reinterpret_cast<const char*>(&blob[header_start]), header_len);
    const std::string descr = header_field(header, "descr", name);
    if (descr != "'<f4'") throw std::runtime_error(name + " has dtype " + descr + "; these tests read float32 ('<f4')");
    if (header_field(header, "fortran_order", name) != "False")
        throw std::runtime_error(name + " is in Fortran order; save it C-contiguous");
    Array a;
    std::istringstream shape(header_field(header, "shape", name).substr(1));
    std::string item;
    while (std::getline(shape, item, ',')) {
        if (item.find_first_of("0123456789") == std::string::npos) continue;
        a.shape.push_back(std::stoll(item));
    }
    const size_t bytes = static_cast<size_t>(a.size()) * 4;
    if (header_start + header_len + bytes != blob.size())
        throw std::runtime_error(name + ": data size does not match its shape");
    a.data.resize(static_cast<size_t>(a.size()));
    std::memcpy(a.data.data(), &blob[header_start + header_len], bytes);  // little-endian host assumed (x86, ARM)
    return a;
}

std::map<std::string, Array> load_npz(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + " cannot be opened");
    const std::vector<uint8_t> zip((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // End of central directory: the last "PK\5\6" record.
    size_t eocd = std::string::npos;
    for (size_t i = zip.size() >= 22 ? zip.size() - 21 : 0; i-- > 0;) {
        if (u32(&zip[i]) == 0x06054b50) {
            eocd = i;
            break;
        }
    }
    if (eocd == std::string::npos) throw std::runtime_error(path + " is not a zip (.npz) file");
    const uint32_t entries = u16(&zip[eocd + 10]);
    size_t pos = u32(&zip[eocd + 16]);
    std::map<std::string, Array> arrays;
    for (uint32_t e = 0; e < entries; ++e) {
        if (pos + 46 > zip.size() || u32(&zip[pos]) != 0x02014b50)
            throw std::runtime_error(path + ": corrupt zip central directory");
        const uint32_t method = u16(&zip[pos + 10]);
        const uint32_t crc = u32(&zip[pos + 16]);
        uint64_t compressed = u32(&zip[pos + 20]), uncompressed = u32(&zip[pos + 24]);
        const uint32_t name_len = u16(&zip[pos + 28]), extra_len = u16(&zip[pos + 30]), comment_len = u16(&zip[pos + 32]);
        uint64_t local = u32(&zip[pos + 42]);
        const std::string name(reinterpret_cast<const char*>(&zip[pos + 46]), name_len);
        // zip64 extra field (id 1): the 64-bit values of the fields that hold 0xFFFFFFFF, in this order.
        for (size_t x = pos + 46 + name_len; x + 4 <= pos + 46 + name_len + extra_len;) {
            const uint32_t id = u16(&zip[x]), size = u16(&zip[x + 2]);
            if (id == 1) {
                size_t q = x + 4;
                if (uncompressed == 0xFFFFFFFFu) uncompressed = u64(&zip[q]), q += 8;
                if (compressed == 0xFFFFFFFFu) compressed = u64(&zip[q]), q += 8;
                if (local == 0xFFFFFFFFu) local = u64(&zip[q]);
            }
            x += 4 + size;
        }
        pos += 46 + name_len + extra_len + comment_len;
        if (local + 30 > zip.size() || u32(&zip[local]) != 0x04034b50)
            throw std::runtime_error(path + ": corrupt local header of " + name);
        const size_t data = local + 30 + u16(&zip[local + 26]) + u16(&zip[local + 28]);
        if (data + compressed > zip.size()) throw std::runtime_error(path + ": " + name + " runs past the file end");
        std::vector<uint8_t> blob;
        if (method == 0) {
            blob.assign(zip.begin() + static_cast<std::ptrdiff_t>(data),
                        zip.begin() + static_cast<std::ptrdiff_t>(data + compressed));
        } else if (method == 8) {
            blob = inflate(&zip[data], compressed, uncompressed);
        } else {
            throw std::runtime_error(path + ": " + name + " uses zip method " + std::to_string(method) +
                                     "; only stored and deflate are read");
        }
        if (blob.size() != uncompressed || crc32(blob.data(), blob.size()) != crc)
            throw std::runtime_error(path + ": " + name + " fails its size/CRC check");
        std::string key = name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0
                              ? name.substr(0, name.size() - 4)
                              : name;
        arrays.emplace(key, parse_npy(blob, path + ":" + name));
    }
    return arrays;
}

}  // namespace tardis::test
