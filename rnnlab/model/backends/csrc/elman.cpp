// The two BPTT loops of rnnlab.rnn._ElmanBPTT in C++: the same ATen calls as the Python
// loops there, without the interpreter between them. Built and loaded by rnnlab/_ext.py.
#include <torch/extension.h>

#include <string>
#include <vector>

namespace {

enum class Act { Tanh, Relu, Sigmoid, Linear, LeakyRelu, Hardtanh };
constexpr double kLeakySlope = 0.01;  // as rnnlab.rnn.ACTIVATIONS["leaky_relu"]

Act parse(const std::string& name) {
  if (name == "tanh") return Act::Tanh;
  if (name == "relu") return Act::Relu;
  if (name == "sigmoid") return Act::Sigmoid;
  if (name == "linear") return Act::Linear;
  if (name == "leaky_relu") return Act::LeakyRelu;
  if (name == "hardtanh") return Act::Hardtanh;
  TORCH_CHECK(false, "rnnlab: unknown activation ", name);
}

// h <- φ(h), in place.
void apply(at::Tensor& h, Act a) {
  switch (a) {
    case Act::Tanh: h.tanh_(); break;
    case Act::Relu: h.relu_(); break;
    case Act::Sigmoid: h.sigmoid_(); break;
    case Act::Linear: break;
    case Act::LeakyRelu: at::leaky_relu_(h, kLeakySlope); break;
    case Act::Hardtanh: at::hardtanh_(h, -1, 1); break;
  }
}

// g <- g ⊙ φ′(z), with φ′ written through the output h = φ(z) (PyTorch's derivative kernels).
void apply_backward(at::Tensor& g, const at::Tensor& h, Act a) {
  switch (a) {
    case Act::Tanh: at::tanh_backward_out(g, g, h); break;
    case Act::Relu: at::threshold_backward_out(g, g, h, 0); break;
    case Act::Sigmoid: at::sigmoid_backward_out(g, g, h); break;
    case Act::Linear: break;
    case Act::LeakyRelu: at::leaky_relu_backward_out(g, g, h, kLeakySlope, true); break;
    case Act::Hardtanh: at::hardtanh_backward_out(g, g, h, -1, 1); break;
  }
}

// out += a @ b for each member of a stack (3-D) or one network (2-D). One plain multiply per
// member, never a batched one: ATen picks a batched multiply's kernel by the batch size, so a
// member's bits would depend on how many members it is stacked with.
void accumulate(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (b.dim() == 2) {
    out.addmm_(a, b);
    return;
  }
  for (int64_t k = 0; k < b.size(0); ++k) {
    at::Tensor o = out.select(0, k);
    o.addmm_(a.select(0, k), b.select(0, k));
  }
}

}  // namespace

// hs ([K,] T, B, H) holds W_xh x_t + b on entry and h_t on exit; w_t = W_hhᵀ ([K,] H, H).
void forward_loop(at::Tensor hs, const at::Tensor& w_t, const std::string& activation) {
  const Act a = parse(activation);
  std::vector<at::Tensor> s = hs.unbind(hs.dim() - 3);  // the time dimension
  apply(s[0], a);
  for (size_t t = 1; t < s.size(); ++t) {
    accumulate(s[t], s[t - 1], w_t);
    apply(s[t], a);
  }
}

// dz ([K,] T, B, H) holds ∂ℓ/∂h_t on entry and ∂L/∂z_t on exit; norms (T, [K,] B), if given,
// gets ‖δ_t‖₂.
void backward_loop(at::Tensor dz, const at::Tensor& hs, const at::Tensor& w,
                   c10::optional<at::Tensor> norms, const std::string& activation) {
  const Act a = parse(activation);
  const int64_t time = hs.dim() - 3;
  std::vector<at::Tensor> z = dz.unbind(time), h = hs.unbind(time), n;
  if (norms) n = norms->unbind(0);
  const std::vector<int64_t> last_dim{-1};
  for (int64_t t = static_cast<int64_t>(z.size()) - 1; t >= 0; --t) {
    if (norms) at::linalg_vector_norm_out(n[t], z[t], 2, last_dim, false, c10::nullopt);
    apply_backward(z[t], h[t], a);
    if (t > 0) accumulate(z[t - 1], z[t], w);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "Elman forward recurrence, in place");
  m.def("backward_loop", &backward_loop, "Elman BPTT recursion, in place");
}
