// The boundary between the ATen-facing CPU ops (pointwise_loss.cpp, masked_mse_loss.cpp) and
// the raw-pointer kernels compiled once per instruction set (kernels_<isa>.cpp). No ATen here, so
// the kernel translation units can be built with their own target flags.
#pragma once
#include <cstdint>

namespace fastloss::cpu {

enum class ScalarKind { kFloat, kDouble, kHalf, kBFloat16 };

// One contiguous slice of a pointwise-loss evaluation. Null pointers mean "absent".
struct PointwiseArgs {
  const void* input;
  const void* target;
  const void* weight;   // per-element weight, or null for 1
  const void* aux;      // per-element auxiliary operand (BCE's pos_weight), or null for 1
  int64_t weight_period;  // weight[i % weight_period]: a block repeated over leading dims
  int64_t aux_period;
  void* loss_out;       // per-element loss (reduction "none"), or null to sum instead
  void* grad_input;     // d loss / d input * grad_scale, or null
  void* grad_target;    // d loss / d target * grad_scale, or null
  double grad_scale;    // 1/N for "mean", 1/sum(weight) for weighted "mean", else 1
  double param;         // the loss's parameter (beta, delta), unused by MSE
};

// Rows of the masked patch MSE: input/target (R, P), mask (R).
struct MaskedMseArgs {
  const void* input;
  const void* target;
  const void* mask;
  void* grad_input;   // or null
  int64_t rows;       // rows in all (lookahead may cross the range given)
  int64_t p;          // values per row
  bool norm_target;
  bool stream_grad;   // write the gradient with streaming stores (see kStreamingBytes)
  double eps;
  double grad_scale;  // 1 / (P * sum(mask))
};

// Rows of a pair/triplet loss: a, b (and c) (N, D), label (N) or null.
struct RowArgs {
  const void* a;
  const void* b;
  const void* c;       // triplet negatives, or null
  const void* label;   // per-row target, or null
  void* loss_out;      // per-row loss (reduction "none"), or null to sum instead
  void* grad_a;        // gradients as if grad_output were 1 (times grad_scale), or null
  void* grad_b;
  void* grad_c;
  int64_t d;
  double grad_scale;   // 1/N for "mean"
  double margin, eps, p;
  bool swap;
  bool stream_grads;   // write the gradients with streaming stores (see kStreamingBytes)
};

// One tile of an in-batch loss (formulas/batch_pair.h): the inner products of `rows` query rows
// with `cols` reference rows, row-major with row stride ld, in T = float (double for double
// inputs), with the rows' squared norms and label ids (equal ids: the same label).
struct PairTileArgs {
  const void* dots;      // of the rows as given: each is scaled by q_scale[i] r_scale[j]
  int64_t rows, cols, ld;
  const void* q_scale;   // rows values: 1 / max(|q_i|, 1e-12) for unit rows, else 1
  const void* r_scale;   // cols values
  const void* q_sq;      // rows values: the squared norms of the (scaled) rows
  const void* r_sq;      // cols values
  const int32_t* q_ids;  // rows ids
  const int32_t* r_ids;  // cols ids
  bool exclude_self;     // the reference set is the batch: row i is not paired with column i + self_offset
  int64_t self_offset;   // (the tile's first row minus its first column, in the whole matrix)
  double margin_a, margin_b;  // contrastive: pos_margin, neg_margin
  // Contrastive outputs: cost'(d) / d of the positive and of the negative pairs (0 elsewhere),
  // times r_scale[j] (so that the tile times the rows as given is the tile times the scaled
  // rows), rows x cols with row stride cols, or null when no gradient is asked; per row, added to:
  // stats[5 i ...] = sum of the positive costs > 0, their count, the same for the negatives, the
  // sum of every cost; rowsum_pos/neg[i] = the row's sum of the coefficients (not scaled).
  void* coef_pos;
  void* coef_neg;
  int32_t* nonzero_pos;  // rows values, written with coef_pos/neg: how many of the row's coefficients are not 0
  int32_t* nonzero_neg;
  double* stats;
  void* rowsum_pos;
  void* rowsum_neg;
  // Hard-mining state per row (T values, int64 columns of the whole matrix), updated: the
  // largest distance to a positive and the smallest to a negative, ties to the lowest column.
  int64_t col0;
  void* pos_d;
  int64_t* pos_j;
  void* neg_d;
  int64_t* neg_j;
};
constexpr int kPairStats = 5;

// One tile of the all-pairs softmax losses (formulas/info_nce.h): the inner products of `rows`
// rows of a with `cols` rows of b, row-major with row stride cols, in T = float (double for
// double inputs); the logits are dots * scale.
struct InfoNceTileArgs {
  const void* dots;
  int64_t rows, cols;
  double scale;          // 1 / temperature
  int64_t row0, col0;    // the tile's first row and column in the whole matrix
  int64_t pos_offset;    // row r's positive: column (r + pos_offset) % pos_period
  int64_t pos_period;
  int64_t self_offset;   // the pairs (r, r + self_offset) are dropped; -1: none
  // Statistics sweep, per row (rows values, updated): the online log-sum-exp state (max, sum
  // of exp(l - max)), and the positive's logit (written when it lies in this tile). Per column
  // (cols values, updated, or null): the same state over this worker's rows.
  void* row_max;
  void* row_sum;
  void* pos_logit;
  void* col_max;
  void* col_sum;
  // Gradient sweep: the coefficient tile (rows x cols, row stride cols, written), the per-row
  // log-sum-exp and weight of the row term and the per-column ones of the column term (null
  // when the term is absent), and per row dot_grad += sum_j c_ij dots_ij.
  void* coef;
  const void* row_lse;
  const void* row_weight;
  const void* col_lse;
  const void* col_weight;
  void* dot_grad;
};
enum class InfoNceTile { kStats, kStatsWithColumns, kGradRow, kGradColumn, kGradBoth };


// Evaluates elements [begin, end) and returns the sum of their (weighted) losses, accumulated
// in float (double for double inputs) in an order fixed by the element indices alone.
using PointwiseRangeFn = double (*)(const PointwiseArgs&, int64_t begin, int64_t end);
// Sum of data[begin, end), same accumulation rules.
using SumRangeFn = double (*)(const void* data, int64_t begin, int64_t end);
// Rows [begin, end) of the masked patch MSE: returns sum(mask * row squared error) / P and
// writes the gradient rows (zeros where mask is 0: those rows are not read).
using MaskedMseRowsFn = double (*)(const MaskedMseArgs&, int64_t begin, int64_t end);

// Rows [begin, end) of a row loss: returns the sum of their losses, writes the rest.
using RowRangeFn = double (*)(const RowArgs&, int64_t begin, int64_t end);
// The epilogue of one in-batch tile: the contrastive costs and coefficients, or the hard mining.
using PairTileFn = void (*)(const PairTileArgs&);
// The epilogue of one all-pairs softmax tile: statistics, or gradient coefficients.
using InfoNceTileFn = void (*)(const InfoNceTileArgs&);

struct KernelTable {
  const char* name;  // the instruction set these kernels were built for
  PointwiseRangeFn (*pointwise)(ScalarKind kind, int64_t loss, bool weight, bool pos_weight);
  SumRangeFn (*sum)(ScalarKind kind);
  MaskedMseRowsFn (*masked_mse)(ScalarKind kind);
  RowRangeFn (*row_loss)(ScalarKind kind, int64_t loss);
  // kind: kFloat or kDouble (the tiles' type); contrastive or hard mining
  PairTileFn (*pair_tile)(ScalarKind kind, bool hard_mining);
  // kind: kFloat or kDouble
  InfoNceTileFn (*info_nce_tile)(ScalarKind kind, InfoNceTile which);
};

const KernelTable& kernels_default();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
bool have_avx512();
// The best table this CPU can run (AVX-512, else AVX2+F16C, else baseline), chosen once.
const KernelTable& kernels_for_this_cpu();

// Elements per reduction chunk: the fixed split that makes sums independent of thread count.
constexpr int64_t kChunk = 16384;
// Gradients of this many bytes and more are written with streaming (non-temporal) stores: they
// cannot stay in the last-level cache anyway (32 MiB on the dev EPYC), and a streaming store
// skips reading each line before writing it, a third of a row loss's memory traffic.
constexpr int64_t kStreamingBytes = int64_t(32) << 20;
// Rows per chunk of the masked patch MSE: a function of P only, for the same reason.
inline int64_t rows_per_chunk(int64_t p) { return p >= kChunk ? 1 : kChunk / (p > 0 ? p : 1); }

}  // namespace fastloss::cpu
