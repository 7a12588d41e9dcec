#pragma once
// The student's forward pass on a CPU, in bf16 or float32, driven through oneDNN directly (issue
// 9, goal 1; float32: issue 22): the same network and weights as StudentImpl, for inference only.
// The unet and resunet(-vae) teachers run on the same engine (OneDnnUNet, OneDnnResUNet; issue
// 22: two of the three teachers that pseudo-labelling runs per case).
//
// LibTorch 1.13 runs each convolution through oneDNN too, but on plain (N,C,D,H,W) tensors: every
// convolution reorders its input into oneDNN's channel-blocked layout and its output back, and
// every GroupNorm, activation, residual add, upsampling and concatenation is a separate pass over
// memory with its own allocation. Here the activations stay in the blocked layout (nCdhw16c: 16
// channels innermost; nCdhw8c for float32 on an AVX2 CPU) from the first convolution to the
// head, the weights are packed once, GroupNorm + LeakyReLU + the residual add are one pass in
// place, upsampling + LeakyReLU one pass, and the merge 1×1 convolution over [skip, up] is two
// convolutions summed in place (no concatenated copy). Activations are freed as soon as they are
// consumed, and at a width of one channel block (16 in the paper student's full resolution) a
// residual block's second convolution and the merge run in place, slab by slab of depth rows (the
// upsampling made per slab too): a whole-crop pass holds two full-resolution feature maps (three
// otherwise), in buffers kept from one pass to the next (no page faults, no heap fragmentation).
// The mirror test-time augmentation and the padding to the stride run inside (predict_mirrored):
// each flip is read from the input and its logits are written back mirrored, as probabilities
// summed in place.
//
// Arithmetic, bf16: bf16 activations and weights, float32 accumulation, GroupNorm statistics in
// double over float32 partial sums (a fixed split of the voxels: the same result at any thread
// count), logits rounded to bf16 by the head and returned as float32 — what LibTorch's bf16
// autocast path computes, step by step inside the fused passes too, up to the rounding of the
// merge (rounded to bf16 after each half). Float32: the same steps without the rounding; the
// logits differ from LibTorch's float32 ones by the order of summation only. The accuracy guard
// is the tests `OneDnnStudent.*` and `FastPath.*`.
//
// Available when kdseg was built with oneDNN (Debian's libdnnl-dev, the library Debian's LibTorch
// itself uses); bf16 where the CPU has native bf16 dot products (AVX-512 BF16, e.g. AMD Zen 4,
// Intel Cooper Lake / Sapphire Rapids), float32 on any CPU with AVX2 or AVX-512. Widths that are
// not multiples of the block are padded with zero channels in the blocked layout (same results,
// the padding's work wasted). Elsewhere predict uses LibTorch.
#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace kdseg {

class SegNetImpl;
class StudentImpl;
class UNetImpl;
class ResUNetImpl;

// "" when `net` (a student, unet, resunet or resunet-vae) can run through oneDNN here in bf16 (or
// float32: bf16 false); otherwise why not, as a sentence (e.g. "this build of kdseg has no oneDNN
// (install libdnnl-dev and rebuild)", "the oneDNN path runs student, unet, resunet and
// resunet-vae, not cascade").
std::string onednn_unavailable(const SegNetImpl& net, bool bf16 = true);
// Channels per block of the engine's feature maps on this CPU in that precision: 16 (AVX-512;
// bf16 needs AVX-512 BF16), 8 (float32 on AVX2 without AVX-512), 0 where it cannot run.
int64_t onednn_block(bool bf16);

// A network's forward pass through oneDNN (OneDnnStudent, OneDnnUNet; make_onednn() picks one).
class OneDnnNet {
 public:
  virtual ~OneDnnNet();
  OneDnnNet(const OneDnnNet&) = delete;
  OneDnnNet& operator=(const OneDnnNet&) = delete;

  bool bf16() const;      // its arithmetic: bf16, else float32
  int64_t block() const;  // channels per block of its layout (16, or 8 in float32 on AVX2)

  // (N,in,D,H,W) float32 CPU, D/H/W multiples of the net's stride → logits (N,out,D,H,W) float32.
  // Samples run one after another (one sample's activations in memory at a time). Thread-safe
  // (calls are serialised).
  at::Tensor forward(const at::Tensor& x) const;

  // The mirror test-time augmentation in one call: the mean over `flips` (each a list of the
  // input's spatial dims 2, 3, 4 to mirror, {} the identity; mirror_sets() gives them) of
  // sigmoid(logits of x mirrored, mirrored back) → (N,out,D,H,W) float32 probabilities. The same
  // numbers as forward() on flipped copies summed in order, without the copies: each flip is read
  // mirrored from x and its logits written back mirrored.
  // `padded_to` ({0,0,0}: x's own size): the network's input size, each side at least x's and a
  // multiple of the stride; x is read as if zero-padded at its far end to it (as sliding_window
  // pads), and the result has x's size (no padded copy of the input or of the output).
  at::Tensor predict_mirrored(const at::Tensor& x, const std::vector<std::vector<int64_t> >& flips,
                              const std::array<int64_t, 3>& padded_to = {0, 0, 0}) const;

  struct Impl;

 protected:
  OneDnnNet();
  std::unique_ptr<Impl> impl_;
};

class OneDnnStudent : public OneDnnNet {
 public:
  // Packs a copy of the net's weights (later changes to the net are not seen), for bf16 or
  // float32 arithmetic. Throws kdseg::Error with onednn_unavailable()'s reason when it
  // cannot run here.
  explicit OneDnnStudent(const StudentImpl& net, bool bf16 = true);
};

// `unet` (models/unet.h) the same way: its convolutions on the blocked maps, InstanceNorm +
// LeakyReLU fused into one pass in place, the decoder's first convolution over [skip, up] as two
// convolutions summed in place (no concatenated copy), its upsampling one pass.
class OneDnnUNet : public OneDnnNet {
 public:
  explicit OneDnnUNet(const UNetImpl& net, bool bf16 = true);
};

// `resunet` and `resunet-vae` (models/resunet.h; the VAE branch runs in training only): the
// pre-activation blocks' GroupNorm + ReLU in one pass into a new map (the block's input stays for
// the residual), the residual added by the second convolution itself (oneDNN's sum post-op), the
// skip added to the upsampling in one pass.
class OneDnnResUNet : public OneDnnNet {
 public:
  explicit OneDnnResUNet(const ResUNetImpl& net, bool bf16 = true);
};

// The oneDNN pass of `net` (student, unet, resunet or resunet-vae) where onednn_unavailable() is
// empty, else null.
std::shared_ptr<OneDnnNet> make_onednn(const SegNetImpl& net, bool bf16);

}  // namespace kdseg
