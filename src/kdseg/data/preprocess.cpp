#include "kdseg/data/preprocess.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kdseg/util/error.h"

namespace kdseg {
namespace {

std::string shape_str(const std::array<int64_t, 3>& s) {
  return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
}

std::array<int64_t, 3> last3(const at::Tensor& t) {
  const int64_t n = t.dim();
  return {t.size(n - 3), t.size(n - 2), t.size(n - 1)};
}

// First and one-past-last index where the 1-D bool tensor is true.
std::pair<int64_t, int64_t> true_range(const at::Tensor& v) {
  at::Tensor idx = v.nonzero();
  if (idx.numel() == 0) return {0, 0};
  return {idx.min().item<int64_t>(), idx.max().item<int64_t>() + 1};
}

}  // namespace

void validate_plan(const PreprocessPlan& plan, const std::string& where) {
  if (plan.channels.size() != kNumModalities)
    throw Error(where,
                "expected " + std::to_string(kNumModalities) + " channels, got " +
                    std::to_string(plan.channels.size()),
                "channels: t1, t1ce, t2, flair in any order");
  for (const auto& c : plan.channels) {
    bool known = false;
    for (const char* m : kModalityNames) known = known || c == m;
    if (!known) throw Error(where, "unknown channel \"" + c + "\"", "one of t1, t1ce, t2, flair");
  }
  if (plan.regions != std::vector<std::string>{"WT", "TC", "ET"})
    throw Error(where, "regions must be WT, TC, ET in that order");
  if (plan.crop != "brain_bbox" && plan.crop != "none")
    throw Error(where, "unknown crop rule \"" + plan.crop + "\"", "\"brain_bbox\" or \"none\"");
  if (plan.normalization != "zscore_nonzero" && plan.normalization != "none")
    throw Error(where, "unknown normalization \"" + plan.normalization + "\"",
                "\"zscore_nonzero\" or \"none\"");
  const auto& f = plan.fixed_shape;
  const bool all_set = f[0] > 0 && f[1] > 0 && f[2] > 0, none_set = !f[0] && !f[1] && !f[2];
  if (!all_set && !none_set)
    throw Error(where, "fixed_shape " + shape_str(f) + " must be all positive or all 0",
                "e.g. 128,128,128 (cascade) or 0,0,0 (resample by spacing)");
  for (double s : plan.spacing)
    if (!(s >= 0) || !std::isfinite(s))
      throw Error(where, "spacing must be >= 0 mm (0 = keep), got " + std::to_string(s));
}

at::Tensor volume_view(const Volume& v) {
  auto* p = const_cast<float*>(v.data.data());
  return torch::from_blob(p, {v.n_channels, v.dim[2], v.dim[1], v.dim[0]}, torch::kFloat32)
      .permute({0, 3, 2, 1});
}

at::Tensor volume_to_tensor(const Volume& v) {
  return volume_view(v).contiguous();
}

at::Tensor labels_to_tensor(const LabelMap& l) {
  auto* p = const_cast<uint8_t*>(l.data.data());
  return torch::from_blob(p, {l.dim[2], l.dim[1], l.dim[0]}, torch::kUInt8)
      .permute({2, 1, 0})
      .contiguous();
}

Volume tensor_to_volume(const at::Tensor& t, const Volume& like_this) {
  at::Tensor c = t.dim() == 3 ? t.unsqueeze(0) : t;
  if (c.dim() != 4 || last3(c) != like_this.dim)
    throw Error("tensor_to_volume", "tensor does not match the grid " + shape_str(like_this.dim));
  Volume out = like<float>(like_this, c.size(0));
  at::Tensor x = c.to(torch::kFloat32).permute({0, 3, 2, 1}).contiguous();
  std::memcpy(out.data.data(), x.data_ptr<float>(), out.data.size() * sizeof(float));
  return out;
}

LabelMap tensor_to_labels(const at::Tensor& t, const Volume& like_this) {
  if (t.dim() != 3 || last3(t) != like_this.dim)
    throw Error("tensor_to_labels", "tensor does not match the grid " + shape_str(like_this.dim));
  LabelMap out = like<uint8_t>(like_this, 1);
  at::Tensor x = t.to(torch::kUInt8).permute({2, 1, 0}).contiguous();
  std::memcpy(out.data.data(), x.data_ptr<uint8_t>(), out.data.size());
  return out;
}

CropBox nonzero_bbox(const at::Tensor& image) {
  at::Tensor mask = (image != 0).any(0);  // (D,H,W)
  CropBox box;
  box.full = last3(image);
  auto d = true_range(mask.any(2).any(1));
  auto h = true_range(mask.any(2).any(0));
  auto w = true_range(mask.any(1).any(0));
  box.lo = {d.first, h.first, w.first};
  box.hi = {d.second, h.second, w.second};
  return box;
}

at::Tensor crop(const at::Tensor& t, const CropBox& box) {
  const int64_t n = t.dim();
  if (last3(t) != box.full)
    throw Error("crop",
                "volume " + shape_str(last3(t)) + " is not the box's grid " + shape_str(box.full));
  return t.slice(n - 3, box.lo[0], box.hi[0])
      .slice(n - 2, box.lo[1], box.hi[1])
      .slice(n - 1, box.lo[2], box.hi[2]);
}

at::Tensor uncrop(const at::Tensor& t, const CropBox& box) {
  if (last3(t) != box.size())
    throw Error("uncrop",
                "tensor " + shape_str(last3(t)) + " is not the box size " + shape_str(box.size()));
  std::vector<int64_t> sizes = t.sizes().vec();
  const size_t n = sizes.size();
  for (int i = 0; i < 3; ++i) sizes[n - 3 + i] = box.full[i];
  at::Tensor out = torch::zeros(sizes, t.options());
  crop(out, box).copy_(t);
  return out;
}

std::array<int64_t, 3> planned_shape(const std::array<int64_t, 3>& size,
                                     const std::array<double, 3>& spacing,
                                     const PreprocessPlan& plan) {
  if (plan.fixed_shape[0] > 0) return plan.fixed_shape;
  std::array<int64_t, 3> out = size;
  for (int i = 0; i < 3; ++i) {
    const double target = plan.spacing[i];
    if (target <= 0 || std::abs(spacing[i] - target) <= 1e-3 * target) continue;
    out[i] = std::max<int64_t>(1, std::llround(size[i] * spacing[i] / target));
  }
  return out;
}

at::Tensor resample_linear(const at::Tensor& t, const std::array<int64_t, 3>& shape) {
  if (last3(t) == shape) return t.contiguous();
  namespace F = torch::nn::functional;
  at::Tensor x = t.to(torch::kFloat32).unsqueeze(0);
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{shape[0], shape[1], shape[2]})
                               .mode(torch::kTrilinear)
                               .align_corners(false))
      .squeeze(0)
      .contiguous();
}

at::Tensor resample_labels(const at::Tensor& labels, const std::array<int64_t, 3>& shape) {
  if (last3(labels) == shape) return labels.contiguous();
  static const int64_t kClasses[4] = {0, 1, 2, 4};
  at::Tensor onehot = torch::stack({labels == kClasses[0], labels == kClasses[1],
                                    labels == kClasses[2], labels == kClasses[3]})
                          .to(torch::kFloat32);
  at::Tensor lut = torch::tensor({0, 1, 2, 4}, torch::kUInt8);
  return lut.index_select(0, resample_linear(onehot, shape).argmax(0).flatten())
      .view({shape[0], shape[1], shape[2]});
}

void zscore_nonzero_(at::Tensor& image) {
  if (image.scalar_type() != torch::kFloat32 || !image.is_contiguous())
    throw Error("zscore_nonzero_", "expected a contiguous float32 tensor");
  // Plain sequential loops in double per channel, one thread per channel: the statistics (and so
  // the cache's bytes) do not depend on the thread count.
  const int64_t n = image.numel() / std::max<int64_t>(1, image.size(0));
  float* data = image.data_ptr<float>();
  at::parallel_for(0, image.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float* x = data + c * n;
      float* y = data + c * n;  // in place: y[i] is written after x[i] is last read
      double sum = 0;
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i)
        if (x[i] != 0) {
          sum += x[i];
          ++count;
        }
      if (count == 0) {
        std::fill(y, y + n, 0.f);
        continue;
      }
      const double mean = sum / static_cast<double>(count);
      double ss = 0;
      for (int64_t i = 0; i < n; ++i)
        if (x[i] != 0) ss += (x[i] - mean) * (x[i] - mean);
      const double sd = std::sqrt(ss / static_cast<double>(count));
      const double scale = sd > 0 ? 1.0 / sd : 1.0;
      for (int64_t i = 0; i < n; ++i)
        y[i] = x[i] != 0 ? static_cast<float>((x[i] - mean) * scale) : 0.f;
    }
  });
}

at::Tensor labels_to_regions(const at::Tensor& labels) {
  return torch::stack({labels > 0, (labels == 1).logical_or(labels == 4), labels == 4})
      .to(torch::kFloat32);
}

PreparedCase preprocess_case(const CaseData& data, const PreprocessPlan& plan, const Volume* soft,
                             const LabelMap* ignore) {
  validate_plan(plan);
  if (data.image.n_channels != kNumModalities)
    throw Error(data.id, "expected 4 modalities, got " + std::to_string(data.image.n_channels));
  std::vector<int64_t> order;
  for (const auto& name : plan.channels)
    for (int m = 0; m < kNumModalities; ++m)
      if (name == kModalityNames[m]) order.push_back(m);
  // A view of the case's voxels: the crop is the first copy made (a whole-grid copy first would
  // double the memory preprocessing needs).
  at::Tensor image = volume_view(data.image);

  PreparedCase out;
  out.id = data.id;
  CaseGeometry& g = out.geometry;
  g.source_spacing = data.image.spacing;
  if (plan.crop == "brain_bbox") {
    g.box = nonzero_bbox(image);
    if (g.box.empty())
      throw Error(data.id, "every voxel of every modality is 0: there is no brain to crop to",
                  "check the case's images, or leave the case out");
  } else {
    g.box.full = last3(image);
    g.box.hi = g.box.full;
  }
  const auto size = g.box.size();
  g.shape = planned_shape(size, g.source_spacing, plan);
  for (int i = 0; i < 3; ++i)
    g.spacing[i] = g.source_spacing[i] * static_cast<double>(size[i]) / g.shape[i];

  image = crop(image, g.box).index_select(0, torch::tensor(order, torch::kInt64));
  image = resample_linear(image, g.shape);
  out.image = image.to(torch::kFloat32).contiguous();  // a copy already: the crop's
  if (plan.normalization == "zscore_nonzero") zscore_nonzero_(out.image);
  if (data.labels) {
    if (data.labels->dim != data.image.dim)
      throw Error(data.id, "label map grid " + shape_str(data.labels->dim) +
                               " differs from the image grid " + shape_str(data.image.dim));
    out.labels = resample_labels(crop(labels_to_tensor(*data.labels), g.box), g.shape);
  }
  if (soft) {
    if (soft->dim != data.image.dim || soft->n_channels != 3)
      throw Error(data.id, "soft targets must be 3 channels (WT,TC,ET) on the image grid " +
                               shape_str(data.image.dim));
    out.soft = resample_linear(crop(volume_to_tensor(*soft), g.box), g.shape).clamp(0, 1);
  }
  if (ignore) {
    if (ignore->dim != data.image.dim)
      throw Error(data.id,
                  "ignore mask grid differs from the image grid " + shape_str(data.image.dim));
    at::Tensor m = (crop(labels_to_tensor(*ignore), g.box) != 0).to(torch::kFloat32).unsqueeze(0);
    out.ignore = (resample_linear(m, g.shape)[0] >= 0.5).to(torch::kUInt8);
  }
  return out;
}

at::Tensor undo_geometry(const at::Tensor& t, const CaseGeometry& geometry) {
  return uncrop(resample_linear(t, geometry.box.size()), geometry.box);
}

}  // namespace kdseg
