#include "kdseg/models/registry.h"

#include <torch/torch.h>

#include <cstdio>
#include <sstream>

#include "kdseg/models/cascade.h"
#include "kdseg/models/net.h"
#include "kdseg/models/resunet.h"
#include "kdseg/models/student.h"
#include "kdseg/models/unet.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

struct PaperFacts {
  const char* description;
  const char* patch;
};

PaperFacts paper_facts(const std::string& arch) {
  if (arch == "unet")
    return {"No-New-Net 3D UNet, InstanceNorm + LeakyReLU (Isensee 2018)", "128x128x128"};
  if (arch == "resunet")
    return {
        "asymmetric residual UNet, GroupNorm + ReLU (Myronenko 2018; base width 16 where he "
        "used 32: widths [32,64,128,256] give his)",
        "144x144x128"};
  if (arch == "resunet-vae")
    return {"resunet + VAE regulariser branch (Myronenko 2018; base width 16, his 32)",
            "144x144x128"};
  if (arch == "cascade")
    return {"3-scale cascade of multi-encoder UNets, max merge (Lachinov 2018)",
            "128x128x128 (resampled)"};
  if (arch == "student")
    return {"residual UNet as released for the distilled student (Lachinov 2019)", "144x144x128"};
  return {"", ""};
}

}  // namespace

nlohmann::json paper_config(const std::string& arch) {
  if (arch == "student") return StudentOptions{};
  if (arch == "unet") return UNetOptions{};
  if (arch == "resunet") return ResUNetOptions{};
  if (arch == "resunet-vae") {
    ResUNetOptions o;
    o.vae = true;
    return o;
  }
  if (arch == "cascade") return CascadeOptions{};
  make_net(arch);  // throws the "unknown architecture" error with the known names
  return {};
}

std::vector<ArchInfo> list_architectures() {
  std::vector<ArchInfo> out;
  for (const auto& name : arch_names()) {
    ArchInfo info;
    info.name = name;
    info.config = paper_config(name);
    SegNet net = make_net(name, info.config);
    info.n_parameters = count_parameters(*net);
    info.stride = net->stride();
    const PaperFacts facts = paper_facts(name);
    info.description = facts.description;
    info.patch = facts.patch;
    out.push_back(std::move(info));
  }
  return out;
}

std::string format_millions(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f M", static_cast<double>(n) / 1e6);
  return buf;
}

std::string format_architectures(const std::vector<ArchInfo>& archs) {
  std::ostringstream os;
  for (const auto& a : archs) {
    char head[96];
    std::snprintf(head, sizeof head, "%-12s %8s  stride %-3lld patch %-24s", a.name.c_str(),
                  format_millions(a.n_parameters).c_str(), static_cast<long long>(a.stride),
                  a.patch.c_str());
    os << head << a.description << "  " << a.config.dump() << "\n";
  }
  return os.str();
}

}  // namespace kdseg
