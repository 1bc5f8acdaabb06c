// Lanes<Acc>: the kLanes lanes of a block as one value (a GCC/Clang vector), so that a formula
// written for a scalar T runs on a whole block in registers. With arrays of kLanes scalars the
// compiler vectorizes the lane loops but keeps the arrays on the stack: every block then stores
// and reloads its running sums, and behind a gradient pass's streaming stores those stack
// stores waited (the cosine losses ran at a third of the copy's speed). Each operation is the
// scalar one lane by lane, so the results are bit for bit those of the scalar code.
#pragma once  // once per translation unit; each unit is one instruction set
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../common/fast_math.h"
#include "kernel_helpers.h"

// Every function here inlined, always: a Lanes value passed to a call that is not inlined goes
// through memory (128-byte aligned stack slots), which undoes the point of the type.
#define FASTLOSS_LANE_FN __attribute__((always_inline)) inline

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// The widest vector of this unit's instruction set: comparisons and blends are done in pieces of
// that width (on a whole 128-byte vector GCC lowers them lane by lane, in scalar code).
#if defined(FASTLOSS_HAVE_AVX512)
constexpr int kVectorBytes = 64;
#elif defined(FASTLOSS_HAVE_AVX)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// N lanes of Acc as one vector (kLanes: a block; kPieceLanes: one vector of the unit's width,
// which alone the compiler keeps in a register), the same bits as integers, and a piece.
template <typename Acc>
constexpr int kPieceLanes = int(kVectorBytes / sizeof(Acc));
template <typename Acc, int N>
struct LaneVectors {
  using Word = std::conditional_t<sizeof(Acc) == 4, int32_t, int64_t>;
  typedef Acc V __attribute__((vector_size(N * sizeof(Acc))));
  typedef Word Bits __attribute__((vector_size(N * sizeof(Acc))));
  typedef Acc Piece __attribute__((vector_size(kVectorBytes)));
  typedef Word PieceBits __attribute__((vector_size(kVectorBytes)));
};

template <typename Acc, int N = kLanes>
struct LaneMask {
  typename LaneVectors<Acc, N>::Bits m;  // all ones where true
};

template <typename Acc, int N = kLanes>
struct Lanes {
  using V = typename LaneVectors<Acc, N>::V;
  using Bits = typename LaneVectors<Acc, N>::Bits;
  V v;
  Lanes() = default;
  // Every lane s (T(0), margins and eps in the formulas): 0 + s, broadcast one piece at a time
  // (on the whole vector GCC stores the lanes one by one, and the loads that follow stall).
  FASTLOSS_LANE_FN Lanes(Acc s) {
    using Piece = typename LaneVectors<Acc, N>::Piece;
    if constexpr (sizeof(V) > sizeof(Piece)) {
      const Piece piece = Piece{} + s;
      for (std::size_t k = 0; k < sizeof(V) / sizeof(Piece); ++k)
        std::memcpy(reinterpret_cast<char*>(&v) + k * sizeof(Piece), &piece, sizeof(Piece));
    } else {
      v = V{} + s;
    }
  }
  FASTLOSS_LANE_FN static Lanes of(V x) { Lanes r; r.v = x; return r; }
};

#define FASTLOSS_LANE_OP(OP)                                                                        \
  template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N> operator OP(Lanes<Acc, N> a, Lanes<Acc, N> b) { return Lanes<Acc, N>::of(a.v OP b.v); } \
  template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N>& operator OP##=(Lanes<Acc, N>& a, Lanes<Acc, N> b) { a.v = a.v OP b.v; return a; }
FASTLOSS_LANE_OP(+)
FASTLOSS_LANE_OP(-)
FASTLOSS_LANE_OP(*)
FASTLOSS_LANE_OP(/)
#undef FASTLOSS_LANE_OP
template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N> operator-(Lanes<Acc, N> a) { return Lanes<Acc, N>::of(-a.v); }

// a OP b piece by piece: all ones in the lanes where it holds.
template <typename Acc, int N, typename Op>
FASTLOSS_LANE_FN LaneMask<Acc, N> compare(Lanes<Acc, N> a, Lanes<Acc, N> b, Op op) {
  using Vs = LaneVectors<Acc, N>;
  constexpr int kPieces = int(sizeof(typename Vs::V) / sizeof(typename Vs::Piece));
  typename Vs::Piece pa[kPieces], pb[kPieces];
  typename Vs::PieceBits pm[kPieces];
  std::memcpy(pa, &a.v, sizeof(pa));
  std::memcpy(pb, &b.v, sizeof(pb));
  for (int i = 0; i < kPieces; ++i) pm[i] = op(pa[i], pb[i]);
  LaneMask<Acc, N> r;
  std::memcpy(&r.m, pm, sizeof(pm));
  return r;
}
#define FASTLOSS_LANE_COMPARE(OP)                                                          \
  template <typename Acc, int N> FASTLOSS_LANE_FN LaneMask<Acc, N> operator OP(Lanes<Acc, N> a, Lanes<Acc, N> b) { \
    return compare(a, b, [](auto x, auto y) { return x OP y; });                            \
  }
FASTLOSS_LANE_COMPARE(<)
FASTLOSS_LANE_COMPARE(>)
FASTLOSS_LANE_COMPARE(<=)
FASTLOSS_LANE_COMPARE(>=)
FASTLOSS_LANE_COMPARE(==)
FASTLOSS_LANE_COMPARE(!=)
#undef FASTLOSS_LANE_COMPARE
template <typename Acc, int N> FASTLOSS_LANE_FN LaneMask<Acc, N> operator&&(LaneMask<Acc, N> a, LaneMask<Acc, N> b) { return {a.m & b.m}; }
template <typename Acc, int N> FASTLOSS_LANE_FN LaneMask<Acc, N> operator||(LaneMask<Acc, N> a, LaneMask<Acc, N> b) { return {a.m | b.m}; }

// The scalar helpers the formulas call, lane by lane (found by argument-dependent lookup); the
// scalar ones stay visible beside them in this namespace.
using ::fastloss::select;
using ::fastloss::fmath::abs;
using ::fastloss::fmath::copysign;
template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N> select(LaneMask<Acc, N> c, Lanes<Acc, N> a, Lanes<Acc, N> b) {
  using Bits = typename Lanes<Acc, N>::Bits;  // a blend by bits: the same as choosing lane by lane
  const Bits bits = (c.m & reinterpret_cast<Bits>(a.v)) | (~c.m & reinterpret_cast<Bits>(b.v));
  return Lanes<Acc, N>::of(reinterpret_cast<typename Lanes<Acc, N>::V>(bits));
}

template <typename Acc, int N> FASTLOSS_LANE_FN typename Lanes<Acc, N>::Bits sign_bit() {
  using Bits = typename Lanes<Acc, N>::Bits;
  using Word = std::remove_reference_t<decltype(Bits{}[0])>;
  return Bits{} + Word(Word(1) << (8 * sizeof(Word) - 1));
}
template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N> abs(Lanes<Acc, N> x) {  // clears the sign bit, as fabs
  using Bits = typename Lanes<Acc, N>::Bits;
  return Lanes<Acc, N>::of(reinterpret_cast<typename Lanes<Acc, N>::V>(reinterpret_cast<Bits>(x.v) & ~sign_bit<Acc, N>()));
}
template <typename Acc, int N> FASTLOSS_LANE_FN Lanes<Acc, N> copysign(Lanes<Acc, N> magnitude, Lanes<Acc, N> sign) {
  using Bits = typename Lanes<Acc, N>::Bits;
  const Bits s = sign_bit<Acc, N>();
  const Bits bits = (reinterpret_cast<Bits>(magnitude.v) & ~s) | (reinterpret_cast<Bits>(sign.v) & s);
  return Lanes<Acc, N>::of(reinterpret_cast<typename Lanes<Acc, N>::V>(bits));
}

// One piece of a block of Acc values: lanes [P p, P p + P) of the kLanes at src.
template <typename Acc>
FASTLOSS_LANE_FN Lanes<Acc, kPieceLanes<Acc>> load_piece(const Acc* src, int p) {
  Lanes<Acc, kPieceLanes<Acc>> r;
  std::memcpy(&r.v, src + p * kPieceLanes<Acc>, sizeof(r.v));  // a plain vector load
  return r;
}
// Piece p of a block's value, and of a mask.
template <typename Acc>
FASTLOSS_LANE_FN Lanes<Acc, kPieceLanes<Acc>> piece_of(const Lanes<Acc>& x, int p) {
  Lanes<Acc, kPieceLanes<Acc>> r;
  std::memcpy(&r.v, reinterpret_cast<const char*>(&x.v) + p * sizeof(r.v), sizeof(r.v));
  return r;
}
template <typename Acc>
FASTLOSS_LANE_FN LaneMask<Acc, kPieceLanes<Acc>> piece_of(const LaneMask<Acc>& x, int p) {
  LaneMask<Acc, kPieceLanes<Acc>> r;
  std::memcpy(&r.m, reinterpret_cast<const char*>(&x.m) + p * sizeof(r.m), sizeof(r.m));
  return r;
}

// kLanes values from src (n of them, zeros past a tail), and back.
template <typename Acc, typename T, typename N>
FASTLOSS_LANE_FN Lanes<Acc> load_lanes(const T* src, N n) {
  Lanes<Acc> r;
  if constexpr (std::is_same_v<T, Acc> && std::is_same_v<N, std::integral_constant<int, kLanes>>) {
    std::memcpy(&r.v, src, sizeof(r.v));  // a plain vector load
  } else {
    Acc block[kLanes];
    load_block(src, int(n), block);
    std::memcpy(&r.v, block, sizeof(r.v));
  }
  return r;
}

template <typename T, typename Acc, typename N>
FASTLOSS_LANE_FN void store_lanes(bool streaming, Lanes<Acc> x, N n, T* dst) {
  Acc block[kLanes];
  std::memcpy(block, &x.v, sizeof(x.v));
  store_gradient_block(streaming, block, n, dst);
}

// sum_lanes's tree (kernel_helpers.h: s[j] += s[j + width], widths halving) on the vector itself,
// in registers: the same additions in the same order.
template <typename Vec, std::size_t... I>
FASTLOSS_LANE_FN auto low_half(Vec x, std::index_sequence<I...>) { return __builtin_shufflevector(x, x, I...); }
template <typename Vec, std::size_t... I>
FASTLOSS_LANE_FN auto high_half(Vec x, std::index_sequence<I...>) {
  return __builtin_shufflevector(x, x, (I + sizeof...(I))...);
}
template <int Width, typename Vec>
FASTLOSS_LANE_FN auto fold_vector(Vec x) {
  if constexpr (Width == 1) {
    return x[0];
  } else {
    using Half = std::make_index_sequence<Width / 2>;
    return fold_vector<Width / 2>(low_half(x, Half{}) + high_half(x, Half{}));
  }
}

template <typename Acc>
FASTLOSS_LANE_FN double sum_lanes(Lanes<Acc> x) {
  return double(fold_vector<kLanes>(x.v));
}

// The kLanes vectors rows[i] folded at once: lane i of the result is sum_lanes(rows[i]), by the
// same additions in the same order. Each level adds the upper half of every row's partial sums
// to the lower half. While a half is whole pieces (vectors of the unit's width) that is a piece
// add per row. Below, two pieces of rows are combined into one holding the halves' sums of both
// (two-source shuffles, which stay single instructions at the unit's width), so after the last
// level the pieces hold every row's sum in row order: a rows-by-lanes transpose done by the adds.
template <int W>
constexpr int half_lane(int i, int second) { return (i / W) * 2 * W + second * W + i % W; }
template <int W, typename Piece, std::size_t... I>
FASTLOSS_LANE_FN Piece add_halves(Piece a, Piece b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, half_lane<W>(int(I), 0)...) +
         __builtin_shufflevector(a, b, half_lane<W>(int(I), 1)...);
}
template <int W, int P, typename Piece>
FASTLOSS_LANE_FN void fold_pieces_level(Piece* v, int count) {
  for (int m = 0; m < count / 2; ++m) v[m] = add_halves<W>(v[2 * m], v[2 * m + 1], std::make_index_sequence<P>{});
  if constexpr (W > 1) fold_pieces_level<W / 2, P>(v, count / 2);
}
template <typename Acc>
FASTLOSS_LANE_FN Lanes<Acc> sum_lanes_of_rows(const Lanes<Acc> (&rows)[kLanes]) {
  using Piece = typename LaneVectors<Acc, kLanes>::Piece;
  constexpr int P = kPieceLanes<Acc>;                   // lanes per piece
  constexpr int kPieces = kLanes / P;                   // pieces per row
  Piece row_piece[kLanes];
  for (int i = 0; i < kLanes; ++i) {
    Piece q[kPieces];
    std::memcpy(q, &rows[i].v, sizeof(q));
    for (int w = kPieces / 2; w >= 1; w /= 2)  // the levels whose halves are whole pieces
      for (int j = 0; j < w; ++j) q[j] = q[j] + q[j + w];
    row_piece[i] = q[0];
  }
  if constexpr (P > 1) fold_pieces_level<P / 2, P>(row_piece, kLanes);
  Lanes<Acc> r;
  std::memcpy(&r.v, row_piece, sizeof(r.v));  // the first kPieces pieces: rows in order
  return r;
}

// Lanes i < n: true, the rest false.
template <typename Acc>
FASTLOSS_LANE_FN LaneMask<Acc> lanes_below(int n) {
  typename Lanes<Acc>::Bits index;
  for (int k = 0; k < kLanes; ++k) index[k] = k;
  return {index < n};
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA

namespace fastloss::fmath {
// For the formulas' qualified calls (fmath::abs(v)), declared before the formulas are.
template <typename Acc, int N>
FASTLOSS_LANE_FN cpu::FASTLOSS_ISA::Lanes<Acc, N> abs(cpu::FASTLOSS_ISA::Lanes<Acc, N> x) { return cpu::FASTLOSS_ISA::abs(x); }
// The square root lane by lane (a loop the compiler vectorizes: sqrt is correctly rounded).
template <typename Acc, int N>
FASTLOSS_LANE_FN cpu::FASTLOSS_ISA::Lanes<Acc, N> sqrt(cpu::FASTLOSS_ISA::Lanes<Acc, N> x) {
  Acc lanes[N];
  std::memcpy(lanes, &x.v, sizeof(lanes));
  for (int k = 0; k < N; ++k) lanes[k] = sqrt(lanes[k]);
  std::memcpy(&x.v, lanes, sizeof(lanes));
  return x;
}
// sign as the scalar one (fast_math.h) computes it, inlined (the generic template was not).
template <typename Acc, int N>
FASTLOSS_LANE_FN cpu::FASTLOSS_ISA::Lanes<Acc, N> sign(cpu::FASTLOSS_ISA::Lanes<Acc, N> v) {
  using L = cpu::FASTLOSS_ISA::Lanes<Acc, N>;
  return select(cpu::FASTLOSS_ISA::abs(v) > L(Acc(0)), cpu::FASTLOSS_ISA::copysign(L(Acc(1)), v), L(Acc(0)));
}
}  // namespace fastloss::fmath
