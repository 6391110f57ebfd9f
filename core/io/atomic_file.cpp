#include "core/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace olm::io {
namespace {

std::string dirname_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  fail(ErrorCode::kIo, what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

void make_directories(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if ((i == path.size() || path[i] == '/') && !partial.empty()) {
      struct stat st {};
      if (::stat(partial.c_str(), &st) != 0 && ::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
        fail_errno("cannot create directory", partial);
    }
    if (i < path.size()) partial.push_back(path[i]);
  }
}

void write_all(int fd, const void* data, size_t size, const std::string& path_for_errors) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("cannot write", path_for_errors);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(int fd)>& write) {
  require(!path.empty(), ErrorCode::kInvalidArgument, "path: empty");
  std::string tmpl = path + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) fail_errno("cannot create a temporary file next to", path);
  const std::string tmp_path(name.data());
  try {
    write(fd);
    if (::fsync(fd) != 0) fail_errno("cannot fsync", tmp_path);
    // mkstemp creates 0600; give the file the usual permissions for a saved artifact.
    ::fchmod(fd, 0644);
    if (::close(fd) != 0) {
      ::unlink(tmp_path.c_str());
      fail_errno("cannot close", tmp_path);
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp_path.c_str());
    throw;
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(tmp_path.c_str());
    errno = saved;
    fail_errno("cannot rename the temporary file to", path);
  }
  const std::string dir = dirname_of(path);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace olm::io
