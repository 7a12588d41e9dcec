#include "kdseg/synth/cohort.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/synth/anatomy.h"
#include "kdseg/synth/case_generator.h"
#include "kdseg/synth/rng.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/progress.h"

namespace kdseg::synth {

namespace fs = std::filesystem;

namespace {
const char* kModalitySuffix[4] = {"t1", "t1ce", "t2", "flair"};
int split_code(const std::string& split) {
  return split == "labeled" ? 0 : (split == "unlabeled" ? 1 : 2);
}
}  // namespace

std::string case_id(const std::string& split, int64_t index) {
  char buf[32];
  const char c = split == "labeled" ? 'L' : (split == "unlabeled" ? 'U' : 'T');
  std::snprintf(buf, sizeof buf, "SYN_%c%04lld", c, static_cast<long long>(index + 1));
  return buf;
}

SynthReport write_cohort(const SynthOptions& opt) {
  if (opt.out.empty()) throw Error("--out", "no output folder given");
  return write_cohort(opt, load_colin27(opt.templates));
}

SynthReport write_cohort(const SynthOptions& opt, const TissueTemplate& t1mm) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.out.empty()) throw Error("--out", "no output folder given");
  if (opt.n_labeled < 0 || opt.n_unlabeled < 0 || opt.n_test < 0)
    throw Error("--labeled/--unlabeled/--test", "case counts must be >= 0");
  const CohortAnatomy anat = prepare_anatomy(t1mm, opt.spacing_mm);

  std::vector<CaseSpec> specs;
  for (const auto& [split, n] : {std::pair<std::string, int>{"labeled", opt.n_labeled},
                                 {"unlabeled", opt.n_unlabeled},
                                 {"test", opt.n_test}}) {
    const std::vector<std::string> kinds = split == "labeled" && opt.stratify_labeled
                                               ? stratified_kinds(n)
                                               : std::vector<std::string>(n);
    for (int i = 0; i < n; ++i)
      specs.push_back({case_id(split, i), split, i, case_seed(opt.seed, split_code(split), i),
                       kinds[static_cast<size_t>(i)]});
  }

  fs::create_directories(opt.out);
  std::vector<nlohmann::json> params(specs.size());
  std::vector<std::string> errors(specs.size());
  Progress progress("synth", static_cast<int64_t>(specs.size()), opt.quiet);
  parallel_for(static_cast<int64_t>(specs.size()), opt.threads, [&](int64_t c) {
    const CaseSpec& spec = specs[static_cast<size_t>(c)];
    const auto tc = std::chrono::steady_clock::now();
    try {
      SynthCase sc = generate_case(anat, spec);
      const fs::path dir = fs::path(opt.out) / spec.split / spec.id;
      fs::create_directories(dir);
      WriteOptions wo;
      wo.compression = opt.compression;
      wo.datatype = kNiftiInt16;
      for (int m = 0; m < 4; ++m)
        write_volume((dir / (spec.id + "_" + kModalitySuffix[m] + ".nii.gz")).string(),
                     sc.image[static_cast<size_t>(m)], wo);
      WriteOptions wl;
      wl.compression = opt.compression;
      const fs::path seg_dir =
          spec.split == "unlabeled" ? fs::path(opt.out) / "hidden" / spec.id : dir;
      fs::create_directories(seg_dir);
      write_labels((seg_dir / (spec.id + "_seg.nii.gz")).string(), sc.labels, wl);
      params[static_cast<size_t>(c)] = std::move(sc.params);
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
      const auto& vol = params[static_cast<size_t>(c)]["volumes_ml"];
      char msg[160];
      std::snprintf(msg, sizeof msg, "WT %.1f mL  TC %.1f mL  ET %.1f mL  %.2f s",
                    vol["wt"].get<double>(), vol["tc"].get<double>(), vol["et"].get<double>(), sec);
      progress.done(spec.id, msg);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(c)] = e.what();
      progress.done(spec.id, std::string("FAILED: ") + e.what());
    }
  });

  SynthReport report;
  nlohmann::json cases = nlohmann::json::array();
  nlohmann::json kinds = nlohmann::json::object();  // split -> kind -> count
  for (const char* split : {"labeled", "unlabeled", "test"})
    for (const char* kind : kTumourKinds) kinds[split][kind] = 0;
  for (size_t c = 0; c < specs.size(); ++c) {
    if (!errors[c].empty()) {
      report.failures.push_back(specs[c].id + ": " + errors[c]);
      continue;
    }
    ++report.n_written;
    const std::string kind = tumour_kind(params[c]);
    params[c]["tumour"]["kind"] = kind;
    kinds[specs[c].split][kind] = kinds[specs[c].split][kind].get<int>() + 1;
    cases.push_back(params[c]);
  }
  const Grid g = brats_grid(opt.spacing_mm);
  nlohmann::json cj = {
      {"format", "kdseg-synth-cohort"},
      {"generator_version", kGeneratorVersion},
      {"seed", opt.seed},
      {"spacing_mm", opt.spacing_mm},
      {"growth_spacing_mm", anat.growth_spacing_mm},
      {"dim", g.dim},
      {"layout", "brats2021"},
      {"labels",
       {{"0", "background"},
        {"1", "NCR (necrotic / non-enhancing core)"},
        {"2", "ED (oedema)"},
        {"4", "ET (enhancing tumour)"}}},
      {"intensity", "int16; white matter ~1000 x per-case gain; background 0, brain >= 1"},
      {"template", {{"files", t1mm.source}, {"gm_wm_means", t1mm.gm_wm_means}}},
      {"splits",
       {{"labeled", opt.n_labeled}, {"unlabeled", opt.n_unlabeled}, {"test", opt.n_test}}},
      {"stratified_labeled", opt.stratify_labeled},
      {"tumour_kinds", kinds},
      {"cases", cases}};
  const std::string text = cj.dump(1) + "\n";
  write_file_atomic((fs::path(opt.out) / "cohort.json").string(),
                    reinterpret_cast<const uint8_t*>(text.data()), text.size());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace kdseg::synth
