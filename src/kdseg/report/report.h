#pragma once
// `kdseg report`: one report folder (index.html + assets, nothing fetched at view time) of an
// experiment (`kdseg reproduce --out EXP`) or of a training run (`kdseg train --out RUN`), laid
// out as docs/outputs.md says. The page shows the results table (best value per column marked),
// box plots of per-case Dice (the paper's Fig. 4), training curves, a NiiVue slice viewer per test
// case (PNG slices where WebGL is unavailable), the configuration and the timing.
//
//   OUT/index.html       the page; the report's data inlined (works from file:// and a server)
//   OUT/report.css, OUT/report.js          the page's style and code (web/report/)
//   OUT/niivue.umd.js, OUT/niivue.txt      NiiVue (BSD-2-Clause) and its version, when found
//   OUT/report.json      the same data as the page, for scripts
//   OUT/data/case_NNN.js one test case's FLAIR and label maps for the viewer (uint8 NIfTI,
//                        gzip, base64); case_NNN_{t1,t1ce,t2}.js its other modalities
//   OUT/png/case_NNN_<source>.png          static axial/coronal/sagittal slices with overlays
//
// Free of LibTorch: reads only the files the other stages wrote.
#include <string>
#include <vector>

namespace kdseg {

struct ReportOptions {
  std::string run;                // experiment or training-run folder, e.g. "exp/"
  std::string out;                // report folder; "" = <run>/report, e.g. "exp/report"
  std::string cases;              // test cases for the viewer; "" = <run>/cohort/test
  std::vector<std::string> pred;  // extra prediction folders (method = folder name), e.g. "out/"
  std::string niivue;             // NiiVue bundle (niivue.umd.js); "" = search the usual
                                  // places (report_niivue_search_paths), "none" = PNG only
  std::string web;                // folder of index.html, report.css, report.js; "" = search
  int max_viewer_cases = 12;      // test cases in the viewer (the first by ID), e.g. 12; 0 = none
  int panel_px = 192;             // size of one static slice in pixels, e.g. 192
  bool lesion_wise = false;       // results table also with lesion-wise Dice and HD95 (lw_*
                                  // columns of metrics.csv, written by evaluate --lesion-wise)
  int threads = 0;                // cases prepared in parallel; 0 = all cores
  bool quiet = false;             // no per-case progress
};

struct ReportSummary {
  std::string index_html;          // path of the page written
  std::string kind;                // "experiment", "run" or "runs"
  int n_methods = 0;               // rows of the results table
  int n_curves = 0;                // training runs with a log.csv
  int n_viewer_cases = 0;          // cases in the viewer
  bool niivue = false;             // NiiVue bundled (else PNG slices only)
  std::vector<std::string> notes;  // what was missing or skipped, as the page says it
};

// Reads `opt.run`, writes the report folder and returns what it holds. Missing parts (no
// predictions, no metrics, no logs) leave their section out with a note; a folder that is none of
// the known kinds, or a template that cannot be found, throws kdseg::Error.
ReportSummary write_report(const ReportOptions& opt);

// Where the NiiVue bundle and the page template are looked for when the options leave them empty,
// in order: $KDSEG_NIIVUE / $KDSEG_WEB_DIR, beside the executable (../share/kdseg/...), and the
// source tree this kdseg was built from (third_party/niivue/ as scripts/web_deps.sh installs it,
// and web/report/).
std::vector<std::string> report_niivue_search_paths();
std::vector<std::string> report_web_search_paths();

}  // namespace kdseg
