// CRC-32 (IEEE 802.3, the zlib/PNG polynomial), for checkpoint tensor and metadata checksums.
// zlib's implementation (several times faster than a byte-wise table); the values are the
// standard CRC-32 ones, so checkpoints written with the earlier hand-written table still verify.
#pragma once
#include <cstddef>
#include <cstdint>

namespace olm::io {

// The CRC-32 of `size` bytes at `data`, continuing from `crc` (0 to start; chaining
// crc32(b, crc32(a)) equals the CRC-32 of a followed by b).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace olm::io
