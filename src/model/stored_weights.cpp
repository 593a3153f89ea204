#include "model/stored_weights.h"

#include "base/check.h"

namespace palm {

namespace {

StoredMatrix store(Backend& be, const float* w, std::int64_t rows, std::int64_t cols, WeightFormat f) {
  StoredMatrix m;
  m.format = f;
  m.rows = rows;
  m.cols = cols;
  const std::int64_t n = rows * cols;
  if (f == WeightFormat::kF32) {
    m.data = w;
  } else if (f == WeightFormat::kBF16) {
    m.bf16 = DeviceArray<std::uint16_t>(be, std::size_t(n));
    be.quantize_bf16(w, m.bf16.data(), n);
    be.stored_to_product_layout(m.bf16.data(), f, rows, cols);
    m.data = m.bf16.data();
  } else {
    m.q = DeviceArray<std::int8_t>(be, std::size_t(n));
    m.scales = DeviceFloats(be, std::size_t(rows));
    be.quantize_int8_rows(w, rows, cols, m.q.data(), m.scales.data());
    be.stored_to_product_layout(m.q.data(), f, rows, cols);
    m.data = m.q.data();
  }
  return m;
}

}  // namespace

std::int64_t StoredMatrix::bytes() const {
  const std::int64_t per = format == WeightFormat::kF32 ? 4 : (format == WeightFormat::kBF16 ? 2 : 1);
  return rows * cols * per + std::int64_t(scales.size()) * 4;
}

DecodeWeights::DecodeWeights(Backend& be, const Weights& w, WeightFormat f) : format(f) {
  const ModelConfig& c = w.config;
  for (const auto& l : w.view.layers) {
    layers.push_back({store(be, l.w_in, c.fused_in_dim(), c.d_model, f), store(be, l.w_o, c.d_model, c.n_heads * c.head_dim, f),
                      store(be, l.w_down, c.d_model, c.d_ff, f)});
  }
  embed = store(be, w.view.embed, c.vocab_size, c.d_model, f);
}

std::int64_t DecodeWeights::bytes() const {
  std::int64_t n = embed.bytes();
  for (const auto& l : layers) n += l.w_in.bytes() + l.w_o.bytes() + l.w_down.bytes();
  return n;
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "fp32") return WeightFormat::kF32;
  if (name == "bf16") return WeightFormat::kBF16;
  if (name == "int8") return WeightFormat::kInt8;
  fail(str_cat("weight format must be fp32, bf16 or int8, got '", name, "'"));
}

}  // namespace palm
