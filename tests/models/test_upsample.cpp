// kdseg::upsample2x (trilinear ×2, align_corners false) against LibTorch's interpolate: values
// and gradients in float32 on sizes with edges of 1, 2 and odd lengths, bf16 through float32, and
// the types it hands to LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kdseg/models/blocks.h"

namespace kdseg {
namespace {

at::Tensor reference(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::interpolate(x,
                        F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{2 * x.size(2), 2 * x.size(3), 2 * x.size(4)})
                            .mode(torch::kTrilinear)
                            .align_corners(false));
}

TEST(Upsample2x, ValuesAndGradientsMatchLibTorch) {
  torch::manual_seed(2);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {1, 1, 1, 1, 1}, {1, 2, 2, 3, 5}, {2, 3, 4, 1, 9}, {1, 4, 7, 6, 33}}) {
    const at::Tensor x0 = torch::randn(shape), r = torch::randn(reference(x0).sizes());
    const at::Tensor x = x0.clone().requires_grad_(), xr = x0.clone().requires_grad_();
    const at::Tensor y = upsample2x(x), yr = reference(xr);
    EXPECT_NE(y.grad_fn()->name().find("Upsample2x"), std::string::npos) << y.grad_fn()->name();
    EXPECT_TRUE(torch::allclose(y, yr, 1e-5, 1e-6)) << (y - yr).abs().max().item<float>();
    (y * r).sum().backward();
    (yr * r).sum().backward();
    EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-5, 1e-5))
        << (x.grad() - xr.grad()).abs().max().item<float>();
    // Without autograd: the same values.
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(upsample2x(x0), y.detach()));
  }
}

TEST(Upsample2x, Bf16GoesThroughFloatAndOtherTypesToLibTorch) {
  torch::manual_seed(3);
  const at::Tensor x = torch::randn({1, 2, 3, 4, 5});
  const at::Tensor b = x.to(at::kBFloat16);
  const at::Tensor yb = upsample2x(b);
  EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(yb, upsample2x(b.to(at::kFloat)).to(at::kBFloat16)));
  const at::Tensor xd = x.to(at::kDouble);
  EXPECT_TRUE(at::equal(upsample2x(xd), reference(xd)));
}

}  // namespace
}  // namespace kdseg
