#include "kdseg/models/plan.h"

#include "kdseg/models/json_options.h"

namespace kdseg {

void to_json(nlohmann::json& j, const PreprocessPlan& p) {
  j = {{"channels", p.channels}, {"regions", p.regions},
       {"spacing", p.spacing},   {"fixed_shape", p.fixed_shape},
       {"crop", p.crop},         {"normalization", p.normalization},
       {"patch", p.patch},       {"stride", p.stride}};
}

void from_json(const nlohmann::json& j, PreprocessPlan& p) {
  JsonOptionsReader r(j, "preprocessing plan");
  r.get("channels", p.channels);
  r.get("regions", p.regions);
  r.get("spacing", p.spacing);
  r.get("fixed_shape", p.fixed_shape);
  r.get("crop", p.crop);
  r.get("normalization", p.normalization);
  r.get("patch", p.patch);
  r.get("stride", p.stride);
  r.finish();
}

PreprocessPlan paper_plan(const std::string& arch) {
  PreprocessPlan p;
  if (arch == "resunet" || arch == "resunet-vae" || arch == "student") p.patch = {144, 144, 128};
  if (arch == "cascade") p.fixed_shape = {128, 128, 128};
  return p;
}

}  // namespace kdseg
