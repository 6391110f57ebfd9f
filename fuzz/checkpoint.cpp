// Checkpoint metadata and directories (checkpoint::read_meta and checkpoint::load): the input's
// first byte picks the fixture's single-process or two-rank sharded step directory, the rest
// replaces its meta.olmk. Properties: accepted metadata carries configs that re-serialise to
// themselves; an accepted load left every model and optimizer tensor with the checksum the
// metadata records for it (whole, or per shard). Rejections are olm::Error.
#include <exception>

#include "fuzz/checkpoint_fixture.h"
#include "fuzz/fuzz_util.h"

namespace {

olm::fuzz::CheckpointFixture& fixture() {
  static olm::fuzz::CheckpointFixture f = olm::fuzz::make_checkpoint_fixture(olm::fuzz::scratch_dir());
  return f;
}

}  // namespace

// OLM_FUZZ_WRITE_SEEDS=<dir>: also writes the fixture's two metadata files there as seeds
// (fuzz/corpus/checkpoint/ came from this).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto& f = fixture();
  if (const char* dir = std::getenv("OLM_FUZZ_WRITE_SEEDS")) {
    std::vector<uint8_t> seed{0};
    seed.insert(seed.end(), f.unsharded_meta.begin(), f.unsharded_meta.end());
    olm::fuzz::write_file(std::string(dir) + "/single.bin", seed.data(), seed.size());
    seed = {1};
    seed.insert(seed.end(), f.sharded_meta.begin(), f.sharded_meta.end());
    olm::fuzz::write_file(std::string(dir) + "/sharded.bin", seed.data(), seed.size());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& f = fixture();
  const std::string dir = data[0] & 1 ? f.sharded_dir : f.unsharded_dir;
  olm::fuzz::write_file(dir + "/" + olm::checkpoint::kMetaFile, data + 1, size - 1);
  try {
    const auto meta = olm::checkpoint::read_meta(dir);
    const auto mfb = meta.model_config.to_flatbuffer();
    const auto tfb = meta.train_config.to_flatbuffer();
    OLM_FUZZ_CHECK(olm::Config::from_flatbuffer(mfb.data(), mfb.size()).to_flatbuffer() == mfb,
                   "the metadata's model config does not re-serialise to itself");
    OLM_FUZZ_CHECK(olm::train::TrainConfig::from_flatbuffer(tfb.data(), tfb.size()).to_flatbuffer() == tfb,
                   "the metadata's train config does not re-serialise to itself");
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("read_meta: rejected with a non-olm exception: ") + e.what());
  }
  try {
    olm::checkpoint::load(*f.trainer, dir);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("load: rejected with a non-olm exception: ") + e.what());
  }
  // Accepted: the trainer's tensors are the ones the metadata vouches for.
  olm::fb::CheckpointMetaT meta;
  const std::vector<uint8_t> aligned(data + 1, data + size);  // the input at data + 1 is not
  flatbuffers::GetRoot<olm::fb::CheckpointMeta>(aligned.data())->UnPackTo(&meta);
  std::map<std::pair<std::string, std::string>, at::Tensor> state;
  for (auto& p : f.trainer->model().module().named_state()) state[{olm::checkpoint::kModelFile, p.name}] = *p.tensor;
  for (auto& [name, t] : f.trainer->optimizer().state()) state[{olm::checkpoint::kOptimFile, name}] = t;
  for (const auto& [key, t] : state) {
    const std::string what = key.first + " '" + key.second + "'";
    if (meta.world_size == 0) {
      bool found = false;
      for (const auto& r : meta.tensors)
        if (r->file == key.first && r->name == key.second) {
          found = true;
          OLM_FUZZ_CHECK(olm::fuzz::crc_of(t) == r->crc32, what + ": loaded bytes differ from the recorded checksum");
        }
      OLM_FUZZ_CHECK(found, what + ": loaded without a record");
    } else {
      const auto flat = t.contiguous().reshape({-1});
      int64_t covered = 0;
      for (const auto& sh : meta.shards)
        if (sh->group == key.first && sh->tensor == key.second) {
          covered += sh->numel;
          // A slice's shard indexes the slice's elements (accepted, so the slice lies inside t).
          const auto elements =
              sh->slice_dim < 0
                  ? flat
                  : t.narrow(sh->slice_dim, sh->slice_start, sh->slice_length).contiguous().reshape({-1});
          OLM_FUZZ_CHECK(olm::fuzz::crc_of(elements.slice(0, sh->offset, sh->offset + sh->numel)) == sh->crc32,
                         what + ": a loaded shard differs from its recorded checksum");
        }
      OLM_FUZZ_CHECK(covered == flat.numel(), what + ": loaded, but its shards do not cover it");
    }
  }
  return 0;
}
