// oneDNN's matmul primitive (its "brgemm" kernels) for one product shape, with the
// transposes expressed as strides so no operand is copied: C = alpha op(A) op(B) + beta C.
// Primitives are made once per shape and kept; executing one is thread-safe.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "kernels/backend.h"

namespace palm {

enum class MatmulInput { kF32, kBF16 };  // A and B; C is fp32 either way

class MatmulCache {
 public:
  MatmulCache();
  ~MatmulCache();
  // A is [M, K] (or [K, M] when trans_a) with row stride lda, B [K, N] (or [N, K]) with
  // ldb, C [M, N] with ldc; a and b point to `input`-typed elements.
  void run(MatmulInput input, bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const void* a, i64 lda,
           const void* b, i64 ldb, float beta, float* C, i64 ldc);

 private:
  struct Primitive;
  using Key = std::tuple<MatmulInput, bool, bool, i64, i64, i64, i64, i64, i64, float, float>;
  std::shared_ptr<const Primitive> get(const Key& key);
  std::mutex mu_;
  std::map<Key, std::shared_ptr<const Primitive>> cache_;
};

}  // namespace palm
