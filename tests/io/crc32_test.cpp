// core/io/crc32.cpp: zlib's CRC-32 against the table implementation olm used before it.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "core/io/crc32.h"

namespace {

// The hand-written table implementation olm used before zlib's, kept as the reference: the
// checkpoints it checksummed must still verify.
uint32_t table_crc32(const void* data, size_t size, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

TEST(Crc32, ZlibMatchesTheTableImplementation) {
  EXPECT_EQ(olm::io::crc32("123456789", 9), 0xCBF43926u);  // the standard check value
  EXPECT_EQ(olm::io::crc32(nullptr, 0), 0u);
  std::mt19937_64 rng(12);
  for (size_t size : {size_t{1}, size_t{3}, size_t{7}, size_t{64}, size_t{1000}, size_t{65537}, size_t{1} << 20}) {
    std::vector<uint8_t> data(size);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    const uint32_t want = table_crc32(data.data(), size);
    EXPECT_EQ(olm::io::crc32(data.data(), size), want) << size;
    // Chained over two pieces, as a reader streaming a file would.
    const size_t half = size / 2;
    EXPECT_EQ(olm::io::crc32(data.data() + half, size - half, olm::io::crc32(data.data(), half)), want) << size;
  }
}

}  // namespace
