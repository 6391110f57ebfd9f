// Save folders: step<N> directories, publishing a written checkpoint by renaming it into place,
// removing what a killed writer left, pruning to keep_last_n, finding the newest checkpoint.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "core/checkpoint/internal.h"
#include "core/error.h"

namespace olm::checkpoint {
namespace detail {

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  fail(ErrorCode::kIo, what + " '" + path + "': " + std::strerror(errno));
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail_errno("cannot open directory", path);
  ::fsync(fd);
  ::close(fd);
}

void remove_tree(const std::string& path) {
  if (DIR* dir = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string child = path + "/" + name;
      if (is_dir(child)) remove_tree(child);
      else ::unlink(child.c_str());
    }
    ::closedir(dir);
  }
  ::rmdir(path.c_str());
}

// step<N> directory names, parsed.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& folder) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name.size() < 5 || name.rfind("step", 0) != 0) continue;
    const std::string digits = name.substr(4);
    if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    const std::string path = folder + "/" + name;
    if (is_file(path + "/" + kMetaFile)) out.emplace_back(std::stoll(digits), path);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

std::string random_suffix() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d-%08x", static_cast<int>(::getpid()), rd());
  return buf;
}

// "stepN" -> N; -1 for any other name.
int64_t step_of_name(const std::string& name) {
  if (name.size() < 5 || name.size() > 22 || name.rfind("step", 0) != 0) return -1;
  if (!std::all_of(name.begin() + 4, name.end(), ::isdigit)) return -1;
  return std::stoll(name.substr(4));
}

// The directory part and the last name of a checkpoint directory path (trailing '/' ignored).
std::pair<std::string, std::string> split_dir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const auto slash = dir.find_last_of('/');
  if (slash == std::string::npos) return {".", dir};
  return {slash == 0 ? "/" : dir.substr(0, slash), dir.substr(slash + 1)};
}

// Removes the leftovers of a writer killed mid-save (see save()).
void clean_stale(const std::string& folder) {
  if (DIR* d = ::opendir(folder.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
    for (const auto& name : names) {
      const std::string path = folder + "/" + name;
      if (name.rfind(".tmp-step", 0) == 0) {
        remove_tree(path);
      } else if (name.rfind("step", 0) == 0 && name.size() > 4 &&
                 std::all_of(name.begin() + 4, name.end(), ::isdigit) && is_dir(path) &&
                 !is_file(path + "/" + kMetaFile)) {
        remove_tree(path);  // a removal (pruning) cut short: never a checkpoint again
      } else if (name.rfind(".old-step", 0) == 0) {
        const std::string step = name.substr(5, name.find('-', 5) - 5);  // "stepN"
        const std::string original = folder + "/" + step;
        if (is_dir(original)) remove_tree(path);
        else ::rename(path.c_str(), original.c_str());
      }
    }
  }
}

// Renames tmp_dir to final_dir (moving an existing final_dir aside first), fsyncing the folder.
void publish(const std::string& folder, const std::string& tmp_dir, const std::string& final_dir, int64_t step) {
  std::string old_dir;
  if (is_dir(final_dir)) {
    old_dir = folder + "/.old-step" + std::to_string(step) + "-" + random_suffix();
    if (::rename(final_dir.c_str(), old_dir.c_str()) != 0) fail_errno("cannot move aside", final_dir);
  }
  if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) fail_errno("cannot rename checkpoint to", final_dir);
  fsync_dir(folder);
  if (!old_dir.empty()) remove_tree(old_dir);
}

// The metadata goes first, so a removal cut short leaves a directory that is no checkpoint
// (clean_stale removes it later) rather than one with files missing.
void remove_checkpoint(const std::string& dir) {
  ::unlink((dir + "/" + kMetaFile).c_str());
  remove_tree(dir);
}

void prune(const std::string& folder, int64_t keep_last_n) {
  auto dirs = step_dirs(folder);
  for (size_t i = 0; i + static_cast<size_t>(keep_last_n) < dirs.size(); ++i) remove_checkpoint(dirs[i].second);
}

}  // namespace detail

using namespace detail;

std::string resolve(const std::string& path) {
  if (is_file(path + "/" + kMetaFile)) return path;
  const std::string newest = latest(path);
  require(!newest.empty(), ErrorCode::kIo, "no checkpoint found at '" + path + "'");
  return newest;
}

std::string latest(const std::string& folder) {
  auto dirs = step_dirs(folder);
  return dirs.empty() ? std::string() : dirs.back().second;
}

}  // namespace olm::checkpoint
