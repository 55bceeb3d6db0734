// The two BPTT loops of rnnlab.model.elman._ElmanBPTT in C++: the same ATen calls as the
// Python loops (rnnlab/model/backends/loops.py), without the interpreter between them. Built
// and loaded by rnnlab/model/backends/cpp.py.
//
// φ and φ′ are ATen operators named by the activation's entry in rnnlab/model/activations.py
// (φ in place: aten::<op>_; φ′ through the output: aten::<backward_op>.grad_input), looked up
// in the dispatcher once per call, with the entry's extra arguments typed by the operator's
// schema. So this file names no activation: a new one needs an entry there, not code here.
#include <torch/extension.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <vector>

namespace {

// An operator and the arguments that follow its leading tensors; no operator: the identity.
struct Op {
  c10::optional<c10::OperatorHandle> handle;
  std::vector<c10::IValue> extra;
};

Op lookup(const std::string& name, const char* overload, const std::vector<double>& args,
          size_t tensors) {
  Op op;
  if (name.empty()) return op;
  const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow(("aten::" + name).c_str(), overload);
  const auto& schema = handle.schema().arguments();
  TORCH_CHECK(schema.size() >= tensors + args.size(), "rnnlab: aten::", name, " takes ",
              schema.size(), " arguments, given ", tensors + args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    switch (schema[tensors + i].type()->kind()) {
      case c10::TypeKind::BoolType: op.extra.emplace_back(args[i] != 0); break;
      case c10::TypeKind::IntType: op.extra.emplace_back(static_cast<int64_t>(args[i])); break;
      case c10::TypeKind::FloatType: op.extra.emplace_back(args[i]); break;
      default: op.extra.emplace_back(at::Scalar(args[i]));  // Scalar
    }
  }
  op.handle = handle;
  return op;
}

// Calls op(tensors..., extra..., out...) through the dispatcher; `stack` is reused scratch.
void call(const Op& op, torch::jit::Stack& stack, std::initializer_list<at::Tensor> tensors,
          const at::Tensor* out) {
  stack.clear();
  for (const auto& t : tensors) stack.emplace_back(t);
  for (const auto& a : op.extra) stack.push_back(a);
  if (out) stack.emplace_back(*out);
  op.handle->callBoxed(&stack);
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
// h <- φ(h) is aten::<op>_(h, args...).
void forward_loop(at::Tensor hs, const at::Tensor& w_t, const std::string& op,
                  const std::vector<double>& args) {
  const Op phi = lookup(op.empty() ? op : op + "_", "", args, 1);
  torch::jit::Stack stack;
  std::vector<at::Tensor> s = hs.unbind(hs.dim() - 3);  // the time dimension
  if (phi.handle) call(phi, stack, {s[0]}, nullptr);
  for (size_t t = 1; t < s.size(); ++t) {
    accumulate(s[t], s[t - 1], w_t);
    if (phi.handle) call(phi, stack, {s[t]}, nullptr);
  }
}

// dz ([K,] T, B, H) holds ∂ℓ/∂h_t on entry and ∂L/∂z_t on exit; norms (T, [K,] B), float64,
// if given, gets ‖δ_t‖₂, its squares summed in float64 (float32's underflow below ~1e−22).
// g <- g ⊙ φ′(z) is aten::<backward_op>.grad_input(g, h, args..., grad_input=g).
void backward_loop(at::Tensor dz, const at::Tensor& hs, const at::Tensor& w,
                   c10::optional<at::Tensor> norms, const std::string& backward_op,
                   const std::vector<double>& args) {
  const Op dphi = lookup(backward_op, "grad_input", args, 2);
  torch::jit::Stack stack;
  const int64_t time = hs.dim() - 3;
  std::vector<at::Tensor> z = dz.unbind(time), h = hs.unbind(time), n;
  if (norms) n = norms->unbind(0);
  const std::vector<int64_t> last_dim{-1};
  for (int64_t t = static_cast<int64_t>(z.size()) - 1; t >= 0; --t) {
    if (norms) at::linalg_vector_norm_out(n[t], z[t], 2, last_dim, false, at::kDouble);
    if (dphi.handle) call(dphi, stack, {z[t], h[t]}, &z[t]);
    if (t > 0) accumulate(z[t - 1], z[t], w);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "Elman forward recurrence, in place");
  m.def("backward_loop", &backward_loop, "Elman BPTT recursion, in place");
}
