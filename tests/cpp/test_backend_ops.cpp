// The CPU's op-level backend (backend/cpu_ops.h): what the graphs of model/ rely on beyond the
// kernels themselves — stacked layers writing side by side, strided views, workspaces that reuse
// their memory, overlapping copies.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu_ops.h"
#include "backend/workspace_pool.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/linear.h"

namespace qwen2audio::backend {
namespace {

std::vector<float> random_floats(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

kernels::Linear float_layer(const std::vector<float>& weight, const std::vector<float>* bias, int64_t out, int64_t in) {
  kernels::Linear layer;
  layer.weight.format = kernels::WeightFormat::F32;
  layer.weight.data = weight.data();
  layer.weight.ld = in;
  layer.out_features = out;
  layer.in_features = in;
  layer.bias = bias ? bias->data() : nullptr;
  return layer;
}

Mat view(std::vector<float>& values, int64_t rows, int64_t cols) {
  return {values.data(), DType::F32, rows, cols, cols};
}

// A stacked layer (q/k/v, gate/up) is its parts side by side, bit for bit, for decode rows (gemv)
// and prefill rows (the Gemm) alike.
TEST(CpuOps, StackedLinearWritesEachPartsColumns) {
  CpuOps ops;
  Workspace workspace;
  const int64_t in = 96, out_a = 64, out_b = 32;
  const std::vector<float> weight_a = random_floats(out_a * in, 1), weight_b = random_floats(out_b * in, 2);
  const std::vector<float> bias_a = random_floats(out_a, 3);
  const kernels::Linear a = float_layer(weight_a, &bias_a, out_a, in), b = float_layer(weight_b, nullptr, out_b, in);
  const auto stacked = ops.load_linear({a, b});
  EXPECT_EQ(stacked->out_features, out_a + out_b);
  EXPECT_EQ(stacked->in_features, in);
  for (const int64_t rows : {1, 3, 40}) {
    std::vector<float> x = random_floats(static_cast<size_t>(rows * in), 4);
    std::vector<float> together(static_cast<size_t>(rows * (out_a + out_b)));
    ops.linear(workspace, *stacked, view(x, rows, in), view(together, rows, out_a + out_b));
    std::vector<float> alone_a(static_cast<size_t>(rows * out_a)), alone_b(static_cast<size_t>(rows * out_b));
    const auto part_a = ops.load_linear({a}), part_b = ops.load_linear({b});
    ops.linear(workspace, *part_a, view(x, rows, in), view(alone_a, rows, out_a));
    ops.linear(workspace, *part_b, view(x, rows, in), view(alone_b, rows, out_b));
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(std::memcmp(&together[r * (out_a + out_b)], &alone_a[r * out_a], sizeof(float) * out_a), 0)
          << rows << " rows, row " << r;
      EXPECT_EQ(std::memcmp(&together[r * (out_a + out_b) + out_a], &alone_b[r * out_b], sizeof(float) * out_b), 0)
          << rows << " rows, row " << r;
    }
  }
}

TEST(CpuOps, StackedPartsMustReadOneWidth) {
  CpuOps ops;
  const std::vector<float> weight(64 * 8);
  EXPECT_THROW(ops.load_linear({float_layer(weight, nullptr, 8, 64), float_layer(weight, nullptr, 16, 32)}),
               std::logic_error);
  EXPECT_THROW(ops.load_linear({}), std::logic_error);
}

// The gate and up halves of one stacked product, read with the row stride of both.
TEST(CpuOps, SiluMulOverStridedHalvesMatchesContiguous) {
  CpuOps ops;
  Workspace workspace;
  const int64_t rows = 5, n = 1000;
  std::vector<float> halves = random_floats(static_cast<size_t>(rows * 2 * n), 5);
  const Mat both{halves.data(), DType::F32, rows, 2 * n, 2 * n};
  std::vector<float> got(static_cast<size_t>(rows * n));
  ops.silu_mul(workspace, both.columns(0, n), both.columns(n, n), view(got, rows, n));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> expected(static_cast<size_t>(n));
    kernels::silu_mul(&halves[r * 2 * n], &halves[r * 2 * n + n], expected.data(), n);
    EXPECT_EQ(std::memcmp(&got[r * n], expected.data(), sizeof(float) * n), 0) << "row " << r;
  }
}

// Packing rows towards the start of one buffer (the encoder keeping each window's audio tokens).
TEST(CpuOps, CopyMovesOverlappingRowsTowardsTheStart) {
  CpuOps ops;
  Workspace workspace;
  const int64_t cols = 7;
  std::vector<float> buffer(static_cast<size_t>(10 * cols));
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<float>(i);
  const std::vector<float> before = buffer;
  const Mat all = view(buffer, 10, cols);
  ops.copy(workspace, all.row_range(3, 6), all.row_range(1, 6));
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(buffer[(1 + r) * cols + c], before[(3 + r) * cols + c]);
  ops.zero(workspace, all.row_range(8, 2).columns(2, 3));
  for (int64_t r = 8; r < 10; ++r)
    for (int64_t c = 0; c < cols; ++c)
      EXPECT_EQ(buffer[r * cols + c], c >= 2 && c < 5 ? 0.0f : before[r * cols + c]) << r << ", " << c;
}

// Slots keep their memory when a later call is smaller (decode steps after a prefill), and grow
// when it is larger.
TEST(CpuOps, WorkspaceSlotsGrowOnlyForLargerCalls) {
  CpuOps ops;
  Workspace workspace;
  const Mat prefill = workspace.matrix(ops, 2, 300, 64, Role::State);
  const Mat step = workspace.matrix(ops, 2, 1, 64, Role::Operand);
  EXPECT_EQ(step.data, prefill.data);
  EXPECT_EQ(step.rows, 1);
  EXPECT_EQ(step.ld, 64);
  const Mat other = workspace.matrix(ops, 0, 1, 64, Role::State);
  EXPECT_NE(other.data, prefill.data);
  const Mat larger = workspace.matrix(ops, 2, 600, 64, Role::State);
  EXPECT_EQ(larger.rows, 600);
  std::fill_n(larger.f32(), 600 * 64, 1.0f);  // the whole matrix is writable (ASan checks the bounds)
}

TEST(CpuOps, StagesHostMemoryInPlace) {
  CpuOps ops;
  Workspace workspace;
  std::vector<float> host(12, 2.0f);
  const Mat in = ops.stage_in(workspace, host.data(), 3, 4, 0);
  EXPECT_EQ(in.data, host.data());
  const Mat out = ops.stage_out(workspace, host.data(), 3, 4, 1);
  EXPECT_EQ(out.data, host.data());
  ops.finish_out(workspace, out, host.data());
  EXPECT_EQ(host[11], 2.0f);
  EXPECT_EQ(ops.make_kv_storage(2, 2, 8, 1, DType::BF16), nullptr);  // the KVCache holds host storage itself
  EXPECT_EQ(ops.description(), "cpu");
}

// A workspace given back is the next borrower's, its slots still sized; borrowers at the same time
// each get their own, and only one idle workspace is kept.
TEST(WorkspacePool, ReusesOneWorkspaceAndLendsExtraOnesWhileItIsOut) {
  CpuOps ops;
  WorkspacePool pool;
  void* first_slot = nullptr;
  {
    const WorkspacePool::Lease lease = pool.borrow();
    first_slot = (*lease).matrix(ops, 0, 100, 64, Role::State).data;
  }
  {
    const WorkspacePool::Lease lease = pool.borrow();
    EXPECT_EQ((*lease).matrix(ops, 0, 10, 64, Role::State).data, first_slot);
    const WorkspacePool::Lease concurrent = pool.borrow();
    EXPECT_NE(&*concurrent, &*lease);
    EXPECT_EQ(pool.created(), 2);
  }
  {
    const WorkspacePool::Lease a = pool.borrow();
    const WorkspacePool::Lease b = pool.borrow();
    EXPECT_EQ(pool.created(), 3);  // both were given back, one kept
  }
}

}  // namespace
}  // namespace qwen2audio::backend
