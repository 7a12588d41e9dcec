#include "kdseg/models/net.h"

#include <torch/torch.h>

#include "kdseg/models/cascade.h"
#include "kdseg/models/resunet.h"
#include "kdseg/models/student.h"
#include "kdseg/models/unet.h"
#include "kdseg/util/error.h"

namespace kdseg {

const std::vector<std::string>& arch_names() {
  static const std::vector<std::string> names{"unet", "resunet", "resunet-vae", "cascade",
                                              "student"};
  return names;
}

SegNet make_net(const std::string& arch, const nlohmann::json& options) {
  const nlohmann::json& j = options.is_null() ? nlohmann::json::object() : options;
  std::shared_ptr<SegNetImpl> net;
  if (arch == "student") {
    net = std::make_shared<StudentImpl>(j.get<StudentOptions>());
  } else if (arch == "unet") {
    net = std::make_shared<UNetImpl>(j.get<UNetOptions>());
  } else if (arch == "resunet" || arch == "resunet-vae") {
    ResUNetOptions o = j.get<ResUNetOptions>();
    o.vae = arch == "resunet-vae";
    net = std::make_shared<ResUNetImpl>(o);
  } else if (arch == "cascade") {
    net = std::make_shared<CascadeImpl>(j.get<CascadeOptions>());
  } else {
    std::string known;
    for (const auto& n : arch_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(arch.empty() ? std::string("--model") : arch, "unknown architecture",
                "known architectures: " + known);
  }
  return SegNet(net);
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true))
    if (p.requires_grad()) n += p.numel();
  return n;
}

}  // namespace kdseg
