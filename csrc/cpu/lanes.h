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

template <typename Acc> struct LaneVectors;
template <> struct LaneVectors<float> {
  typedef float V __attribute__((vector_size(kLanes * sizeof(float))));
  typedef int32_t Bits __attribute__((vector_size(kLanes * sizeof(float))));
  typedef float Piece __attribute__((vector_size(kVectorBytes)));
  typedef int32_t PieceBits __attribute__((vector_size(kVectorBytes)));
};
template <> struct LaneVectors<double> {
  typedef double V __attribute__((vector_size(kLanes * sizeof(double))));
  typedef int64_t Bits __attribute__((vector_size(kLanes * sizeof(double))));
  typedef double Piece __attribute__((vector_size(kVectorBytes)));
  typedef int64_t PieceBits __attribute__((vector_size(kVectorBytes)));
};

template <typename Acc>
struct LaneMask {
  typename LaneVectors<Acc>::Bits m;  // all ones where true
};

template <typename Acc>
struct Lanes {
  using V = typename LaneVectors<Acc>::V;
  using Bits = typename LaneVectors<Acc>::Bits;
  V v;
  Lanes() = default;
  FASTLOSS_LANE_FN Lanes(Acc s) : v(V{} + s) {}  // every lane s: T(0), margins and eps in the formulas
  FASTLOSS_LANE_FN static Lanes of(V x) { Lanes r; r.v = x; return r; }
};

#define FASTLOSS_LANE_OP(OP)                                                                        \
  template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc> operator OP(Lanes<Acc> a, Lanes<Acc> b) { return Lanes<Acc>::of(a.v OP b.v); } \
  template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc>& operator OP##=(Lanes<Acc>& a, Lanes<Acc> b) { a.v = a.v OP b.v; return a; }
FASTLOSS_LANE_OP(+)
FASTLOSS_LANE_OP(-)
FASTLOSS_LANE_OP(*)
FASTLOSS_LANE_OP(/)
#undef FASTLOSS_LANE_OP
template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc> operator-(Lanes<Acc> a) { return Lanes<Acc>::of(-a.v); }

// a OP b piece by piece: all ones in the lanes where it holds.
template <typename Acc, typename Op>
FASTLOSS_LANE_FN LaneMask<Acc> compare(Lanes<Acc> a, Lanes<Acc> b, Op op) {
  using Vs = LaneVectors<Acc>;
  constexpr int kPieces = int(sizeof(typename Vs::V) / sizeof(typename Vs::Piece));
  typename Vs::Piece pa[kPieces], pb[kPieces];
  typename Vs::PieceBits pm[kPieces];
  std::memcpy(pa, &a.v, sizeof(pa));
  std::memcpy(pb, &b.v, sizeof(pb));
  for (int i = 0; i < kPieces; ++i) pm[i] = op(pa[i], pb[i]);
  LaneMask<Acc> r;
  std::memcpy(&r.m, pm, sizeof(pm));
  return r;
}
#define FASTLOSS_LANE_COMPARE(OP)                                                          \
  template <typename Acc> FASTLOSS_LANE_FN LaneMask<Acc> operator OP(Lanes<Acc> a, Lanes<Acc> b) { \
    return compare(a, b, [](auto x, auto y) { return x OP y; });                            \
  }
FASTLOSS_LANE_COMPARE(<)
FASTLOSS_LANE_COMPARE(>)
FASTLOSS_LANE_COMPARE(<=)
FASTLOSS_LANE_COMPARE(>=)
FASTLOSS_LANE_COMPARE(==)
FASTLOSS_LANE_COMPARE(!=)
#undef FASTLOSS_LANE_COMPARE

// The scalar helpers the formulas call, lane by lane (found by argument-dependent lookup); the
// scalar ones stay visible beside them in this namespace.
using ::fastloss::select;
using ::fastloss::fmath::abs;
using ::fastloss::fmath::copysign;
template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc> select(LaneMask<Acc> c, Lanes<Acc> a, Lanes<Acc> b) {
  using Bits = typename Lanes<Acc>::Bits;  // a blend by bits: the same as choosing lane by lane
  const Bits bits = (c.m & reinterpret_cast<Bits>(a.v)) | (~c.m & reinterpret_cast<Bits>(b.v));
  return Lanes<Acc>::of(reinterpret_cast<typename Lanes<Acc>::V>(bits));
}

template <typename Acc> FASTLOSS_LANE_FN typename Lanes<Acc>::Bits sign_bit() {
  using Bits = typename Lanes<Acc>::Bits;
  using Word = std::remove_reference_t<decltype(Bits{}[0])>;
  return Bits{} + Word(Word(1) << (8 * sizeof(Word) - 1));
}
template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc> abs(Lanes<Acc> x) {  // clears the sign bit, as fabs
  using Bits = typename Lanes<Acc>::Bits;
  return Lanes<Acc>::of(reinterpret_cast<typename Lanes<Acc>::V>(reinterpret_cast<Bits>(x.v) & ~sign_bit<Acc>()));
}
template <typename Acc> FASTLOSS_LANE_FN Lanes<Acc> copysign(Lanes<Acc> magnitude, Lanes<Acc> sign) {
  using Bits = typename Lanes<Acc>::Bits;
  const Bits s = sign_bit<Acc>();
  const Bits bits = (reinterpret_cast<Bits>(magnitude.v) & ~s) | (reinterpret_cast<Bits>(sign.v) & s);
  return Lanes<Acc>::of(reinterpret_cast<typename Lanes<Acc>::V>(bits));
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
template <typename Acc>
FASTLOSS_LANE_FN cpu::FASTLOSS_ISA::Lanes<Acc> abs(cpu::FASTLOSS_ISA::Lanes<Acc> x) { return cpu::FASTLOSS_ISA::abs(x); }
// sign as the scalar one (fast_math.h) computes it, inlined (the generic template was not).
template <typename Acc>
FASTLOSS_LANE_FN cpu::FASTLOSS_ISA::Lanes<Acc> sign(cpu::FASTLOSS_ISA::Lanes<Acc> v) {
  using L = cpu::FASTLOSS_ISA::Lanes<Acc>;
  return select(cpu::FASTLOSS_ISA::abs(v) > L(Acc(0)), cpu::FASTLOSS_ISA::copysign(L(Acc(1)), v), L(Acc(0)));
}
}  // namespace fastloss::fmath
