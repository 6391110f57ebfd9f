// olm_dist_tests' entry point: the gtest runner, or one rank of a multi-process test when
// launched as `olm_dist_tests --worker MODE OUT TIMEOUT_S` (dist_harness.h's launch).
#include <gtest/gtest.h>

#include "core/distributed/process_group.h"
#include "dist_runs.h"

namespace {

using namespace olm_dist_testing;

int worker(const std::string& mode, const std::string& out, double timeout_s) {
  try {
    olm::distributed::ProcessGroupOptions o;
    o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    auto group = olm::distributed::ProcessGroup::create(o);
    const bool dies = (mode == "die" || mode == "stop") && group->rank() == 1;
    if (mode == "mesh") {  // each rank's coordinates, and the ranks summed over its row and column
      const auto mesh = olm::distributed::DeviceMesh::build(group, {{"dp_replicate", 2}, {"dp_shard", 2}});
      auto row = at::full({1}, static_cast<int64_t>(1) << group->rank(), at::kLong), column = row.clone();
      mesh.group("dp_shard")->all_reduce_sum({row});
      mesh.group("dp_replicate")->all_reduce_sum({column});
      std::ofstream(out) << "coords " << mesh.coordinate("dp_replicate") << " " << mesh.coordinate("dp_shard")
                         << " row " << row.item<int64_t>() << " column " << column.item<int64_t>() << "\n";
      group->shutdown();
      return 0;
    }
    const Mode m = mode_setup(mode);
    const TrainRun r = train(group, dies ? 3 : -1, mode == "stop" ? SIGSTOP : SIGKILL, m.extra, m.model, m.documents);
    write_run(r, out);
    group->shutdown();
    return 0;
  } catch (const olm::Error& e) {
    std::fprintf(stderr, "worker error (%d): %s\n", static_cast<int>(e.code()), e.what());
    return e.code() == olm::ErrorCode::kDistributed ? 3 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker exception: %s\n", e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--worker") return worker(argv[2], argv[3], std::stod(argv[4]));
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
