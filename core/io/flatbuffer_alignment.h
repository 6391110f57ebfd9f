#pragma once
// FlatBuffers 2.0.8's Verifier checks a vector's 4-byte length prefix for alignment but not its
// elements, so a crafted buffer can place an [int64] or [double] vector at an address that is
// 4 mod 8; UnPackTo then loads 8-byte values from a misaligned address (undefined behaviour,
// found by fuzz/checkpoint). Readers check every 8-byte-element vector with this after
// verification and refuse the buffer as corrupt instead.
#include <flatbuffers/flatbuffers.h>

#include <cstdint>

namespace olm::io {

template <class T>
bool elements_aligned(const flatbuffers::Vector<T>* vector) {
  return vector == nullptr || reinterpret_cast<std::uintptr_t>(vector->Data()) % alignof(T) == 0;
}

}  // namespace olm::io
