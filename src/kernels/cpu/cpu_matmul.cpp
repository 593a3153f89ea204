#include "kernels/cpu/cpu_matmul.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "base/check.h"

namespace palm {

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

struct MatmulCache::Primitive {
  dnnl::memory::desc a, b, c;
  dnnl::matmul prim;
};

MatmulCache::MatmulCache() = default;
MatmulCache::~MatmulCache() = default;

std::shared_ptr<const MatmulCache::Primitive> MatmulCache::get(const Key& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = cache_[key];
  if (slot) return slot;
  const auto [input, trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta] = key;
  using dnnl::memory;
  const auto type = input == MatmulInput::kBF16 ? memory::data_type::bf16 : memory::data_type::f32;
  auto p = std::make_shared<Primitive>();
  p->a = memory::desc({M, K}, type, trans_a ? memory::dims{1, lda} : memory::dims{lda, 1});
  p->b = memory::desc({K, N}, type, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  p->c = memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->a, p->b, p->c), attr, cpu_engine());
    p->prim = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    fail(str_cat("oneDNN matmul unavailable for M=", M, " N=", N, " K=", K, ": ", e.what()));
  }
  slot = p;
  return slot;
}

void MatmulCache::run(MatmulInput input, bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const void* a,
                      i64 lda, const void* b, i64 ldb, float beta, float* C, i64 ldc) {
  const auto p = get(Key{input, trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta});
  thread_local dnnl::stream stream(cpu_engine());
  dnnl::memory am(p->a, cpu_engine(), const_cast<void*>(a));
  dnnl::memory bm(p->b, cpu_engine(), const_cast<void*>(b));
  dnnl::memory cm(p->c, cpu_engine(), C);
  p->prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  stream.wait();
}

}  // namespace palm
