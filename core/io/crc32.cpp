#include "core/io/crc32.h"

#include <zlib.h>

#include <algorithm>

namespace olm::io {

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  // zlib's length is a uInt (32 bits): longer buffers go in pieces.
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (size > 0) {
    const size_t n = std::min<size_t>(size, 1u << 30);
    c = ::crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

}  // namespace olm::io
