#include "core/distributed/context_parallel.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace olm::distributed {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Ring messages: key/value blocks and the gradients that travel back with them are separate
// streams between the same two ranks, so each has its own tag.
constexpr int64_t kKeyValueTag = 1;
constexpr int64_t kKeyValueGradTag = 2;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The global indices of rank `rank`'s tokens (of a sequence of seq_len) in the zig-zag layout:
// chunks rank and 2W-1-rank of 2W.
at::Tensor zigzag_indices(int64_t rank, int64_t world, int64_t seq_len, const at::Device& device) {
  const int64_t chunk = seq_len / (2 * world);
  const auto options = at::TensorOptions().dtype(at::kLong).device(device);
  const int64_t mirror = 2 * world - 1 - rank;
  return at::cat({at::arange(rank * chunk, (rank + 1) * chunk, options),
                  at::arange(mirror * chunk, (mirror + 1) * chunk, options)});
}

// Which keys (global indices `cols`) queries (global indices `rows`, their documents starting
// at doc_start (B, rows)) may see: their own document's, at or before themselves, and with a
// window only the last `window`. (B, 1, rows, cols) bool, broadcast over heads.
at::Tensor visible(const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& doc_start,
                   std::optional<int64_t> window) {
  auto r = rows.unsqueeze(1), c = cols.unsqueeze(0);
  auto allowed = c.le(r);
  if (window) allowed = allowed.logical_and(c.gt(r - *window));
  allowed = allowed.unsqueeze(0).logical_and(c.unsqueeze(0).ge(doc_start.unsqueeze(2)));
  return allowed.unsqueeze(1);
}

// ---- Ring attention (zig-zag layout) ----
//
// Every rank keeps its queries and passes key/value blocks round the ring: at step s it holds
// the block of rank (r - s) mod W. Each rank's tokens are two chunks (its zig-zag halves), so a
// (query, key) block pair is four chunk pairs; a pair in which no query sees any key is skipped.
// Without documents or a window that skips, on each of the W - 1 steps with another rank's
// block, two of the four pairs (the keys all after the queries): half the score and value
// products of those steps, the same half on every rank, which is the point of the zig-zag.
// Documents and windows make more pairs empty and skip them too.

struct RingSpec {
  ProcessGroup* group = nullptr;
  int64_t seq_len = 0;
  std::optional<int64_t> window;
  double scale = 1.0;
};

// The chunk pairs of this rank's queries against the block of rank `source`, with their masks.
struct ChunkPair {
  int64_t q_begin, k_begin;
  at::Tensor mask;  // (B, 1, chunk, chunk)
};

std::vector<ChunkPair> visible_pairs(const RingSpec& ring, int64_t source, const at::Tensor& q_index,
                                     const at::Tensor& doc_start) {
  const int64_t chunk = q_index.size(0) / 2;
  const auto k_index = zigzag_indices(source, ring.group->world_size(), ring.seq_len, q_index.device());
  std::vector<ChunkPair> pairs;
  for (int64_t a = 0; a < 2; ++a) {
    for (int64_t b = 0; b < 2; ++b) {
      auto mask = visible(q_index.slice(0, a * chunk, (a + 1) * chunk), k_index.slice(0, b * chunk, (b + 1) * chunk),
                          doc_start.slice(1, a * chunk, (a + 1) * chunk), ring.window);
      if (mask.any().item<bool>()) pairs.push_back({a * chunk, b * chunk, mask});
    }
  }
  return pairs;
}

// Posts this step's exchange: `outgoing` to the next rank, `incoming` from the previous one.
struct RingExchange {
  std::unique_ptr<Pending> send, recv;
  void wait() {
    if (send) send->wait();
    if (recv) recv->wait();
    send.reset();
    recv.reset();
  }
};

RingExchange exchange(ProcessGroup& group, const at::Tensor& outgoing, const at::Tensor& incoming, int64_t tag) {
  const int64_t w = group.world_size(), r = group.rank();
  RingExchange x;
  x.send = group.send_async(outgoing, (r + 1) % w, tag);
  x.recv = group.recv_async(incoming, (r + w - 1) % w, tag);
  return x;
}

struct RingAttention : public torch::autograd::Function<RingAttention> {
  // q, k, v: (B, H, T_local, D); doc_start: (B, T_local) int64, the global index where each
  // query's document starts. Scores and the softmax statistics are float32 whatever the
  // inputs' dtype.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& doc_start, int64_t group_address, int64_t seq_len, int64_t window,
                            double scale) {
    RingSpec ring{reinterpret_cast<ProcessGroup*>(group_address), seq_len,
                  window > 0 ? std::optional<int64_t>(window) : std::nullopt, scale};
    ProcessGroup& group = *ring.group;
    const int64_t w = group.world_size(), r = group.rank();
    const auto q_index = zigzag_indices(r, w, seq_len, q.device());
    const auto qf = q.to(at::kFloat);
    const auto f32 = qf.options();
    const int64_t chunk = q.size(2) / 2;
    // Online softmax per query: running max m, running sum l of exp(s - m), and the
    // unnormalized output acc = sum exp(s - m) v.
    auto m = at::full({q.size(0), q.size(1), q.size(2)}, kNegInf, f32);
    auto l = at::zeros_like(m);
    auto acc = at::zeros(qf.sizes(), f32);
    at::Tensor kv = at::stack({k, v}).contiguous();
    for (int64_t step = 0; step < w; ++step) {
      at::Tensor next;
      RingExchange x;
      if (step + 1 < w) {  // the next block travels while this one is computed
        next = at::empty_like(kv);
        x = exchange(group, kv, next, kKeyValueTag);
      }
      const int64_t source = (r - step + w) % w;
      const auto kf = kv[0].to(at::kFloat), vf = kv[1].to(at::kFloat);
      for (const auto& p : visible_pairs(ring, source, q_index, doc_start)) {
        auto rows = [&](at::Tensor& t) { return t.slice(2, p.q_begin, p.q_begin + chunk); };
        auto s = at::matmul(qf.slice(2, p.q_begin, p.q_begin + chunk),
                            kf.slice(2, p.k_begin, p.k_begin + chunk).transpose(-2, -1)) *
                 ring.scale;
        s.masked_fill_(p.mask.logical_not(), kNegInf);
        auto m_old = rows(m);
        auto m_new = at::maximum(m_old, std::get<0>(s.max(-1)));
        // A query that has seen no key yet keeps m = -inf; subtracting 0 instead keeps
        // exp(-inf - m) at 0 rather than NaN.
        auto m_safe = at::where(at::isinf(m_new), at::zeros_like(m_new), m_new);
        auto probs = at::exp(s - m_safe.unsqueeze(-1));
        auto rescale = at::exp(m_old - m_safe);
        rows(l).mul_(rescale).add_(probs.sum(-1));
        rows(acc).mul_(rescale.unsqueeze(-1)).add_(at::matmul(probs, vf.slice(2, p.k_begin, p.k_begin + chunk)));
        m_old.copy_(m_new);
      }
      if (step + 1 < w) {
        x.wait();
        kv = next;
      }
    }
    // Every query sees at least itself (doc_positions were checked), so l > 0 and m is finite.
    auto out = acc / l.unsqueeze(-1);
    auto lse = m + at::log(l);
    ctx->saved_data["group"] = group_address;
    ctx->saved_data["seq_len"] = seq_len;
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({q, k, v, doc_start, out, lse});
    return out.to(q.scalar_type());
  }

  // The block gradients of softmax attention from the saved logsumexp: P = exp(S - lse),
  // dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = scale dS K,
  // dK = scale dS^T Q. dQ accumulates here; each block's dK, dV travel round the ring with it
  // and arrive back at its owner after the last step.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &doc_start = saved[3], &out = saved[4], &lse = saved[5];
    const int64_t window = ctx->saved_data["window"].toInt();
    RingSpec ring{reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt()), ctx->saved_data["seq_len"].toInt(),
                  window > 0 ? std::optional<int64_t>(window) : std::nullopt, ctx->saved_data["scale"].toDouble()};
    ProcessGroup& group = *ring.group;
    const int64_t w = group.world_size(), r = group.rank();
    const auto q_index = zigzag_indices(r, w, ring.seq_len, q.device());
    const auto qf = q.to(at::kFloat);
    const auto d_out = grads[0].to(at::kFloat);
    const auto delta = (d_out * out).sum(-1);  // rowsum(dO * O)
    auto dq = at::zeros_like(qf);
    const int64_t chunk = q.size(2) / 2;
    at::Tensor kv = at::stack({k, v}).contiguous();
    at::Tensor arriving;  // the gradients of this step's block from the ranks it has visited
    RingExchange grad_exchange;
    for (int64_t step = 0; step < w; ++step) {
      at::Tensor next;
      RingExchange x;
      if (step + 1 < w) {
        next = at::empty_like(kv);
        x = exchange(group, kv, next, kKeyValueTag);
      }
      const int64_t source = (r - step + w) % w;
      const auto kf = kv[0].to(at::kFloat), vf = kv[1].to(at::kFloat);
      // This rank's share of the block's dK, dV: computed while the gradients from the
      // earlier ranks are still arriving.
      auto dkv = at::zeros({2, q.size(0), q.size(1), q.size(2), q.size(3)}, qf.options());
      for (const auto& p : visible_pairs(ring, source, q_index, doc_start)) {
        const auto qa = qf.slice(2, p.q_begin, p.q_begin + chunk);
        const auto kb = kf.slice(2, p.k_begin, p.k_begin + chunk);
        const auto vb = vf.slice(2, p.k_begin, p.k_begin + chunk);
        const auto d_out_a = d_out.slice(2, p.q_begin, p.q_begin + chunk);
        auto s = at::matmul(qa, kb.transpose(-2, -1)) * ring.scale;
        s.masked_fill_(p.mask.logical_not(), kNegInf);
        auto probs = at::exp(s - lse.slice(2, p.q_begin, p.q_begin + chunk).unsqueeze(-1));
        dkv[1].slice(2, p.k_begin, p.k_begin + chunk).add_(at::matmul(probs.transpose(-2, -1), d_out_a));
        auto dp = at::matmul(d_out_a, vb.transpose(-2, -1));
        auto ds = probs * (dp - delta.slice(2, p.q_begin, p.q_begin + chunk).unsqueeze(-1));
        dq.slice(2, p.q_begin, p.q_begin + chunk).add_(at::matmul(ds, kb) * ring.scale);
        dkv[0].slice(2, p.k_begin, p.k_begin + chunk).add_(at::matmul(ds.transpose(-2, -1), qa) * ring.scale);
      }
      if (step > 0) {
        grad_exchange.wait();
        dkv.add_(arriving);
      }
      if (w > 1) {  // on to the next rank, which holds this block next (or owns it, after the last step)
        arriving = at::empty_like(dkv);
        grad_exchange = exchange(group, dkv, arriving, kKeyValueGradTag);
      } else {
        arriving = dkv;
      }
      if (step + 1 < w) {
        x.wait();
        kv = next;
      }
    }
    grad_exchange.wait();
    return {dq.to(q.scalar_type()), arriving[0].to(k.scalar_type()), arriving[1].to(v.scalar_type()),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- Ulysses ----
//
// x: (N, B, H, T_local, D), N tensors stacked so one all-to-all moves them all. Rank j gets
// head group j (H / W heads) of every rank's tokens: (N, B, H / W, T, D), tokens in rank order,
// which is sequence order in the contiguous layout.
at::Tensor sequence_to_heads(ProcessGroup& group, const at::Tensor& x) {
  const int64_t w = group.world_size();
  const int64_t n = x.size(0), b = x.size(1), h = x.size(2), t = x.size(3), d = x.size(4);
  auto input = x.reshape({n, b, w, h / w, t, d}).permute({2, 0, 1, 3, 4, 5}).contiguous();
  auto output = at::empty_like(input);  // output[j]: rank j's tokens of my heads
  group.all_to_all_async(output, input)->wait();
  return output.permute({1, 2, 3, 0, 4, 5}).reshape({n, b, h / w, w * t, d});
}

// The inverse: (N, B, H / W, T, D) -> (N, B, H, T_local, D).
at::Tensor heads_to_sequence(ProcessGroup& group, const at::Tensor& y) {
  const int64_t w = group.world_size();
  const int64_t n = y.size(0), b = y.size(1), hw = y.size(2), t = y.size(3) / w, d = y.size(4);
  auto input = y.reshape({n, b, hw, w, t, d}).permute({3, 0, 1, 2, 4, 5}).contiguous();
  auto output = at::empty_like(input);  // output[j]: head group j of my tokens
  group.all_to_all_async(output, input)->wait();
  return output.permute({1, 2, 0, 3, 4, 5}).reshape({n, b, hw * w, t, d});
}

// Each all-to-all's gradient is the other one.
struct UlyssesAllToAll : public torch::autograd::Function<UlyssesAllToAll> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t group_address, bool to_heads) {
    ctx->saved_data["group"] = group_address;
    ctx->saved_data["to_heads"] = to_heads;
    auto& group = *reinterpret_cast<ProcessGroup*>(group_address);
    return to_heads ? sequence_to_heads(group, x) : heads_to_sequence(group, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& group = *reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    const bool to_heads = ctx->saved_data["to_heads"].toBool();
    const auto g = grads[0].contiguous();
    return {to_heads ? heads_to_sequence(group, g) : sequence_to_heads(group, g), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ContextParallelGroup::ContextParallelGroup(std::shared_ptr<ProcessGroup> group, ContextParallelStyle style)
    : group_(std::move(group)), style_(style) {
  require(group_ != nullptr, ErrorCode::kInvalidArgument, "context parallelism: the process group is NULL");
  require(style == ContextParallelStyle::kRingZigZag || style == ContextParallelStyle::kUlysses,
          ErrorCode::kInvalidArgument,
          "context parallelism: style " + std::to_string(static_cast<int>(style)) + " is neither ring nor Ulysses");
}

int64_t ContextParallelGroup::split_count() const {
  return style_ == ContextParallelStyle::kRingZigZag ? 2 * size() : size();
}

at::Tensor ContextParallelGroup::global_indices(int64_t seq_len) const {
  const int64_t parts = split_count();
  require(seq_len > 0 && seq_len % parts == 0, ErrorCode::kInvalidArgument,
          "seq_len: " + std::to_string(seq_len) + " is not a positive multiple of " +
              (style_ == ContextParallelStyle::kRingZigZag ? "2 x " : "") + "the context-parallel degree (" +
              std::to_string(parts) + ")");
  if (style_ == ContextParallelStyle::kRingZigZag) return zigzag_indices(rank(), size(), seq_len, at::kCPU);
  const int64_t local = seq_len / size();
  return at::arange(rank() * local, (rank() + 1) * local, at::kLong);
}

at::Tensor ContextParallelGroup::shard(const at::Tensor& t, int64_t dim, const std::string& argument) const {
  require(t.defined(), ErrorCode::kInvalidArgument, argument + ": undefined tensor");
  require(dim >= -t.dim() && dim < t.dim(), ErrorCode::kInvalidArgument,
          argument + ": dimension " + std::to_string(dim) + " is out of range for a " + std::to_string(t.dim()) +
              "-D tensor");
  const int64_t d = dim < 0 ? dim + t.dim() : dim, length = t.size(d), parts = split_count();
  require(length % parts == 0, ErrorCode::kInvalidArgument,
          argument + ": length " + std::to_string(length) + " of dimension " + std::to_string(d) +
              " is not a multiple of " + (style_ == ContextParallelStyle::kRingZigZag ? "2 x " : "") +
              "the context-parallel degree (" + std::to_string(parts) + ")");
  const int64_t chunk = length / parts;
  if (style_ == ContextParallelStyle::kUlysses) return t.narrow(d, rank() * chunk, chunk);
  return at::cat({t.narrow(d, rank() * chunk, chunk), t.narrow(d, (parts - 1 - rank()) * chunk, chunk)}, d);
}

at::Tensor ContextParallelGroup::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const at::Tensor& doc_positions, std::optional<int64_t> window,
                                           std::optional<double> scale) {
  require(q.defined() && q.dim() == 4, ErrorCode::kInvalidArgument, "q: must be (B, H, T_local, D)");
  require(k.defined() && k.sizes() == q.sizes(), ErrorCode::kInvalidArgument, "k: must have q's shape");
  require(v.defined() && v.sizes() == q.sizes(), ErrorCode::kInvalidArgument, "v: must have q's shape");
  require(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), ErrorCode::kInvalidArgument,
          "k, v: must have q's dtype");
  const int64_t B = q.size(0), H = q.size(1), local = q.size(2), D = q.size(3), W = size();
  require(local > 0 && (style_ != ContextParallelStyle::kRingZigZag || local % 2 == 0), ErrorCode::kInvalidArgument,
          "q: T_local (" + std::to_string(local) + ") must be positive" +
              (style_ == ContextParallelStyle::kRingZigZag ? " and even: the zig-zag layout gives each rank two equal chunks"
                                                           : ""));
  require(doc_positions.defined() && doc_positions.scalar_type() == at::kLong && doc_positions.dim() == 2 &&
              doc_positions.size(0) == B && doc_positions.size(1) == local,
          ErrorCode::kInvalidArgument,
          "doc_positions: must be int64 (B, T_local) = (" + std::to_string(B) + ", " + std::to_string(local) + ")");
  require(!window || *window >= 1, ErrorCode::kInvalidArgument, "window: must be at least 1");
  require(!scale || std::isfinite(*scale), ErrorCode::kInvalidArgument, "scale: must be finite");
  const int64_t seq_len = local * W;
  const auto q_index = global_indices(seq_len).to(q.device());
  const auto positions = doc_positions.to(q.device());
  // A token's document starts at or before the sequence's start and itself; outside that a
  // query would see no key at all.
  require(positions.ge(0).logical_and(positions.le(q_index.unsqueeze(0))).all().item<bool>(),
          ErrorCode::kInvalidArgument,
          "doc_positions: every token's position in its document must lie in [0, its global index]");
  const double softmax_scale = scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  const auto group_address = reinterpret_cast<int64_t>(group_.get());

  if (style_ == ContextParallelStyle::kRingZigZag) {
    const auto doc_start = q_index.unsqueeze(0) - positions;
    return RingAttention::apply(q, k, v, doc_start, group_address, seq_len, window.value_or(0), softmax_scale);
  }

  require(H % W == 0, ErrorCode::kInvalidConfig,
          "n_heads (" + std::to_string(H) + ") is not divisible by the context-parallel degree (" + std::to_string(W) +
              "): Ulysses splits the heads over the ranks");
  const auto index = at::arange(seq_len, positions.options());
  if (W == 1) {  // the whole sequence is here already
    const auto mask = visible(index, index, index.unsqueeze(0) - positions, window);
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, softmax_scale);
  }
  // Every token's document position, in sequence order (contiguous shards gather in order).
  auto gathered = at::empty({W * B * local}, positions.options());
  group_->all_gather_into_async(gathered, positions.contiguous().view({-1}))->wait();
  const auto all_positions = gathered.view({W, B, local}).permute({1, 0, 2}).reshape({B, seq_len});
  const auto mask = visible(index, index, index.unsqueeze(0) - all_positions, window);
  auto heads = UlyssesAllToAll::apply(at::stack({q, k, v}), group_address, true);
  auto att = at::scaled_dot_product_attention(heads[0], heads[1], heads[2], mask, 0.0, false, softmax_scale);
  return UlyssesAllToAll::apply(att.unsqueeze(0), group_address, false)[0];
}

}  // namespace olm::distributed
