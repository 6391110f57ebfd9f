// Crash-safe file replacement: write to a temporary file in the target's directory, fsync it,
// rename it over the target and fsync the directory. Readers see the old file or the new one.
#pragma once
#include <functional>
#include <string>

namespace olm::io {

// `write` receives an open file descriptor and must write the whole content (use write_all).
// Throws Error(kIo) naming the path; on failure the target is untouched and the temporary
// file removed.
void write_file_atomically(const std::string& path, const std::function<void(int fd)>& write);

// mkdir -p; throws Error(kIo) naming the directory that could not be created.
void make_directories(const std::string& path);

void write_all(int fd, const void* data, size_t size, const std::string& path_for_errors);

}  // namespace olm::io
