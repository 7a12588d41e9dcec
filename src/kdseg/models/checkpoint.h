#pragma once
// The checkpoint file, DESIGN §2's contract: one file written by torch::pickle_save of a dict
// (string → any) that Python's `torch.load(path)` reads as a plain dict:
//   "format"     "kdseg-checkpoint"
//   "version"    int, kCheckpointVersion; a reader refuses any other
//   "arch"       "unet" | "resunet" | "resunet-vae" | "cascade" | "student"
//   "config"     JSON text {"model": <architecture options>, "plan": <PreprocessPlan>}
//   "state_dict" dict name → tensor, dotted PyTorch-style names ("encoder.1.0.conv1.weight"),
//                CPU, contiguous
//   + optional extra entries (e.g. the optimiser state of last.pt), any picklable IValue.
// Written atomically (temporary file + rename). Loading is strict: missing or unexpected
// weight names, or a shape mismatch, are an error naming the file.
#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/models/net.h"
#include "kdseg/models/plan.h"

namespace kdseg {

constexpr const char* kCheckpointFormat = "kdseg-checkpoint";
constexpr int64_t kCheckpointVersion = 1;

using StateDict = c10::Dict<std::string, at::Tensor>;

// A module's parameters and buffers under their dotted names (detached, CPU, contiguous).
StateDict state_dict(const torch::nn::Module& module);
// Copies `state` into the module's parameters and buffers. Strict: every name must match both
// ways with equal shapes; `where` (e.g. the file) is named in the error, which lists the
// missing and unexpected names.
void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& where);

struct Checkpoint {
  int64_t version = kCheckpointVersion;
  std::string arch;      // e.g. "student"
  nlohmann::json model;  // the architecture's options
  PreprocessPlan plan;
  StateDict state;                                                            // the weights
  c10::impl::GenericDict extra{c10::StringType::get(), c10::AnyType::get()};  // other entries
};

// Writes `net` (its arch, options and weights) with `plan` (plan.stride is set to the net's) and
// the `extra` entries (keys other than the five reserved ones) to `path`, atomically.
void save_checkpoint(const std::string& path, const SegNetImpl& net, PreprocessPlan plan,
                     const c10::impl::GenericDict& extra =
                         c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()));

// Reads and validates the file (format, version, keys, types); throws kdseg::Error naming it.
Checkpoint read_checkpoint(const std::string& path);

// read_checkpoint + make_net(arch, model) + strict load_state_dict. The net is on the CPU in
// eval mode. `info`, when given, receives the rest of the checkpoint (plan, extra, …).
SegNet load_checkpoint(const std::string& path, Checkpoint* info = nullptr);

}  // namespace kdseg
