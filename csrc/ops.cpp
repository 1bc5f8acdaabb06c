// The op schemas: the one contract every backend implements (CPU in cpu/, CUDA in cuda/).
#include <torch/library.h>

TORCH_LIBRARY(fastloss, m) {
  // Evaluates a pointwise loss over same-shape contiguous tensors in one pass. Returns
  // (loss, grad_input, grad_target): loss is 0-d for mean/sum and input-shaped for none; each
  // gradient is d loss / d tensor as if grad_output were 1, or an empty tensor when not asked.
  // weight and pos_weight are either input-sized or a contiguous block whose numel divides
  // input's, repeated over the leading elements (a broadcast over leading dimensions).
  // "mean" divides by sum(weight) when mean_by_weight_sum (then weight is input-sized), else by N.
  m.def(
      "pointwise_loss(Tensor input, Tensor target, Tensor? weight, Tensor? pos_weight, int loss, "
      "int reduction, float param, bool mean_by_weight_sum, bool need_grad_input, "
      "bool need_grad_target) -> (Tensor, Tensor, Tensor)");
  // The masked autoencoder's patch loss over rows: input, target (R, P), mask (R,) in input's
  // dtype. Returns (loss, grad_input): loss = sum(mask * mean_P((x - tn)^2)) / sum(mask), with
  // tn the target, normalised per row by its mean and unbiased variance when norm_target;
  // grad_input as if grad_output were 1 (empty when not asked). Rows with mask 0 are not read.
  m.def(
      "masked_mse_loss(Tensor input, Tensor target, Tensor mask, bool norm_target, float eps, "
      "bool need_grad_input) -> (Tensor, Tensor)");
  // A loss over rows of pairs or triplets of embeddings (formulas/row.h): a, b, c (N, D),
  // label (N,). Returns (loss, grad_a, grad_b, grad_c): loss (N,) for none, else 0-d; each
  // gradient as if grad_output were 1, or empty when not asked.
  m.def(
      "row_loss(Tensor a, Tensor b, Tensor? c, Tensor? label, int loss, int reduction, float margin, "
      "float eps, float p, bool swap, bool need_grad_a, bool need_grad_b, bool need_grad_c) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // An in-batch loss (formulas/batch_pair.h) of query rows q (N, D) against reference rows r
  // (M, D), or against q itself (every ordered pair i != j) when r is absent, with integer
  // labels (N,) and (M,); computed tile by tile, never holding the N x M matrix. loss: 0
  // contrastive (margin_a, margin_b = pos_margin, neg_margin), 1 batch-hard triplet (margin_a =
  // margin), 2 its soft-margin form; reduction: 1 mean, 2 sum, 3 AvgNonZero; normalize: the rows
  // are L2-normalised first (F.normalize, its backward included); self_offset >= 0 (with r): the
  // queries are r's rows from self_offset on, and the pairs (i, i + self_offset) are dropped as the
  // batch's own pairs are (a rank's rows against the gathered batch). Returns (loss, grad_q,
  // grad_r, stats): the loss 0-d, each gradient as if grad_output were 1, or empty when not asked;
  // stats (5,) float64, the sums the reductions divide: contrastive: the positive costs > 0 and
  // their number, the same for the negative ones, every cost; batch-hard: every kept anchor's
  // cost and their number, the costs > 0 and their number, every cost again.
  m.def(
      "batch_pair_loss(Tensor q, Tensor? r, Tensor q_labels, Tensor? r_labels, int loss, int reduction, "
      "float margin_a, float margin_b, bool normalize, bool need_grad_q, bool need_grad_r, int self_offset=-1) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // The softmax cross-entropy losses over all pairs (formulas/info_nce.h), tile by tile, never
  // holding the n x m matrix of logits l_ij = (a_i . b_j) / temperature: a (n, D), b (m, D),
  // temperature a 0-d floating tensor on their device. Row i's positive (target) is column
  // (i + pos_offset) mod pos_period when that is < m; self_offset >= 0 drops the pairs
  // (i, i + self_offset) (a's rows are b's from that row on), -1 drops none.
  // info_nce_stats -> (lse, pos_logit, col_lse): per row of a, the log-sum-exp of its logits and
  // its positive's logit (NaN where it has none or it is a dropped pair); with col_stats, per
  // column the log-sum-exp of its logits over the rows (else empty). float32 (float64 for float64
  // inputs).
  m.def(
      "info_nce_stats(Tensor a, Tensor b, Tensor temperature, int pos_offset, int pos_period, int self_offset, "
      "bool col_stats) -> (Tensor, Tensor, Tensor)");
  // The backward sweep over the same logits: with the coefficients
  //   c_ij = row_weight_i (exp(l_ij - row_lse_i) - [positive]) + col_weight_j (exp(l_ij - col_lse_j) - [positive])
  // (a term absent when its weight is absent; the positive pairs as above, and symmetric when
  // both terms are used), returns (grad_a, grad_b, dot_grad): grad_a = C b / temperature in a's
  // dtype; grad_b = C^T a / temperature in b's dtype when need_grad_b (else empty); and per row
  // dot_grad_i = sum_j c_ij (a_i . b_j), from which d loss / d temperature = -sum(dot_grad) /
  // temperature^2. lse and weights float32 (float64 for float64 inputs).
  m.def(
      "info_nce_grad(Tensor a, Tensor b, Tensor temperature, Tensor? row_lse, Tensor? row_weight, "
      "Tensor? col_lse, Tensor? col_weight, int pos_offset, int pos_period, int self_offset, bool need_grad_b) "
      "-> (Tensor, Tensor, Tensor)");
  // grad *= grad_output, in place; a no-op (decided on the device) when a 0-d grad_output is 1.
  m.def("scale_grad_(Tensor(a!) grad, Tensor grad_output) -> ()");
}
