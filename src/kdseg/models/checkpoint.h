#pragma once
// The checkpoint file, docs/design.md §2's contract (docs/checkpoint.md): one file written by
// torch::pickle_save of a dict (string → any) that Python reads as a plain dict
// (kdseg.load, python/kdseg/checkpoint_file.py; torch.load too):
//   "format"     "kdseg-checkpoint"
//   "version"    int, kCheckpointVersion (2); version 1 (no digest) is still read, with a warning
//   "arch"       "unet" | "resunet" | "resunet-vae" | "cascade" | "student"
//   "config"     JSON text {"model": <architecture options>, "plan": <PreprocessPlan>}
//   "state_dict" dict name → tensor, dotted PyTorch-style names ("encoder.1.0.conv1.weight"),
//                CPU, contiguous
//   + optional extra entries (e.g. the optimiser state of last.pt): None, bools, ints, floats,
//     strings, tensors, and lists, tuples and dicts of them
//   "digest"     "sha256:<64 hex>" of all the other entries (content_digest), written last
// Written atomically (temporary file + rename), and read back before it is written. Reading never
// runs anything from the file (io/checkpoint_file.h: an allow-list of what the writer emits, every
// byte of the zip checked, then the digest). Loading is strict: missing or unexpected weight
// names, or a shape mismatch, are an error naming the file.
#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/io/checkpoint_file.h"
#include "kdseg/models/net.h"
#include "kdseg/models/plan.h"

namespace kdseg {

using StateDict = c10::Dict<std::string, at::Tensor>;

// A module's parameters and buffers under their dotted names (detached, CPU, contiguous).
StateDict state_dict(const torch::nn::Module& module);
// Copies `state` into the module's parameters and buffers. Strict: every name must match both
// ways with equal shapes; `where` (e.g. the file) is named in the error, which lists the
// missing and unexpected names.
void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& where);

struct Checkpoint {
  int64_t version = kCheckpointVersion;
  std::string digest;    // "sha256:…" as stored ("" in a version 1 file)
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

// The bytes of a checkpoint file holding `dict` (which has no "digest"): pickled, its digest
// added, and read back with kdseg's reader before they are returned, so that a file kdseg writes
// is one it reads. Throws kdseg::Error naming `where`. save_checkpoint's core; tests use it too.
std::vector<uint8_t> checkpoint_file_bytes(c10::impl::GenericDict dict, const std::string& where);

// Reads and validates the file (zip, allow-listed pickle, format, version, digest, keys, types);
// throws kdseg::Error naming it. Warnings (a version 1 file has no digest) go to stderr.
Checkpoint read_checkpoint(const std::string& path);

// read_checkpoint + make_net(arch, model) + strict load_state_dict. The net is on the CPU in
// eval mode. `info`, when given, receives the rest of the checkpoint (plan, extra, …).
SegNet load_checkpoint(const std::string& path, Checkpoint* info = nullptr);

}  // namespace kdseg
