// kdseg report: the numbers (CSV, box plots, best per column), the folder it writes from a tiny
// experiment made in code, its tolerance of missing parts, the command line, and the page itself
// opened in headless Chromium (NiiVue on WebGL2 by SwiftShader, and the PNG fallback).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/report/collect.h"
#include "kdseg/report/report.h"
#include "kdseg/report/tables.h"
#include "kdseg/report/viewer.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::phantom_labels;
using test::run_command;
using test::run_kdseg;
using test::ScratchDir;
using test::write_case;
namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

bool is_png(const fs::path& path) {
  const std::string s = read_text(path);
  return s.size() > 8 && s.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

// The NiiVue bundle scripts/web_deps.sh installs in the sources, or "" when it is not there.
std::string niivue_bundle() {
  const fs::path p = fs::path(KDSEG_SOURCE_DIR) / "third_party" / "niivue" / "niivue.umd.js";
  return fs::is_regular_file(p) ? p.string() : "";
}

const char* const kLogHeader =
    "step,epoch,loss,dice_loss,bce_loss,lr,samples_per_s,wait_fraction,elapsed_s,val_dice_wt,"
    "val_dice_tc,val_dice_et,val_mean_dice\n";

// A tiny experiment folder as `kdseg reproduce` lays it out (docs/outputs.md): two test cases,
// predictions of two methods (the truth, perturbed), their metrics, training logs, results.json.
void make_experiment(const fs::path& exp, bool with_predictions = true) {
  const std::array<int64_t, 3> dim{32, 32, 24};
  const char* ids[2] = {"CASE_A", "CASE_B"};
  for (int i = 0; i < 2; ++i) {
    const LabelMap truth = phantom_labels(dim, {15.0 + i, 16, 12}, 9.0 - i);
    write_case((exp / "cohort" / "test").string(), ids[i], Layout::brats2021, truth);
    if (!with_predictions) continue;
    // unet: shifted by two voxels; student: a slightly smaller tumour.
    write_labels((exp / "seed1" / "pred" / "unet" / (std::string(ids[i]) + ".nii.gz")).string(),
                 phantom_labels(dim, {17.0 + i, 16, 12}, 9.0 - i));
    write_labels((exp / "seed1" / "pred" / "student" / (std::string(ids[i]) + ".nii.gz")).string(),
                 phantom_labels(dim, {15.0 + i, 16, 12}, 8.0 - i));
  }
  // Made-up metrics: student best at ET, TC and every HD95; unet best at WT.
  write_text(exp / "seed1" / "eval" / "unet" / "metrics.csv",
             "id,dice_et,dice_wt,dice_tc,hd95_et,hd95_wt,hd95_tc\n"
             "CASE_A,0.60,0.95,0.70,4.0,2.0,3.0\n"
             "CASE_B,0.70,0.93,0.72,5.0,2.5,3.5\n");
  write_text(exp / "seed1" / "eval" / "student" / "metrics.csv",
             "id,dice_et,dice_wt,dice_tc,hd95_et,hd95_wt,hd95_tc\n"
             "CASE_A,0.80,0.90,0.85,2.0,1.0,1.5\n"
             "CASE_B,nan,0.88,0.83,373.13,1.5,2.0\n");
  for (const char* model : {"unet", "student"}) {
    write_text(exp / "seed1" / "runs" / model / "log.csv",
               std::string(kLogHeader) +
                   "1,0,1.6,0.9,0.7,0.001,4,0.02,1.5,,,,\n"
                   "10,0,1.2,0.7,0.5,0.001,4,0.02,12,0.5,0.4,0.3,0.4\n"
                   "20,1,0.9,0.5,0.4,0.0001,4,0.03,24,0.7,0.6,0.5,0.6\n");
    write_text(exp / "seed1" / "runs" / model / "config.json",
               std::string("{\"command\": \"train\", \"options\": {\"model\": \"") + model +
                   "\", \"steps\": 20}}\n");
    // The student ran without validation (as reproduce's runs do): done.json says -1.
    write_text(
        exp / "seed1" / "runs" / model / "done.json",
        std::string(model) == "unet"
            ? "{\"steps\": 20, \"best_step\": 20, \"best_mean_dice\": 0.6, \"seconds\": 24.5}\n"
            : "{\"steps\": 20, \"best_step\": -1, \"best_mean_dice\": -1, \"seconds\": 24.5}\n");
  }
  write_text(exp / "config.json", "{\"command\": \"reproduce\", \"options\": {\"seeds\": [1]}}\n");
  write_text(exp / "results.json",
             "{\"methods\": [\"unet\", \"student\"], \"seeds\": [1],"
             " \"paired\": [{\"a\": \"student\", \"b\": \"unet\", \"metric\": \"dice_mean\","
             " \"diff\": 0.03, \"ci95\": [-0.01, 0.07], \"n_cases\": 2, \"verdict\": \"n.s.\"}],"
             " \"timing\": {\"synth\": 1.5, \"train\": 49.0, \"evaluate\": 0.4},"
             " \"wall_seconds\": 52.0}\n");
}

ReportOptions options(const fs::path& run, const fs::path& out) {
  ReportOptions opt;
  opt.run = run.string();
  opt.out = out.string();
  opt.niivue = niivue_bundle().empty() ? "none" : niivue_bundle();
  opt.quiet = true;
  opt.threads = 2;
  return opt;
}

bool any_note_contains(const std::vector<std::string>& notes, const std::string& text) {
  for (const auto& n : notes)
    if (n.find(text) != std::string::npos) return true;
  return false;
}

// ---------------------------------------------------------------- the numbers

TEST(ReportTables, Base64MatchesRfc4648) {
  auto b64 = [](const std::string& s) {
    return report::base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(b64("\xff\xfe"), "//4=");
}

TEST(ReportTables, BoxStatsHasTukeyWhiskersAndOutliers) {
  const report::BoxStats b = report::box_stats({1, 2, 3, 4, 5, 100, NAN});
  EXPECT_EQ(b.n, 6);
  EXPECT_EQ(b.n_nan, 1);
  EXPECT_DOUBLE_EQ(b.p25, 2.25);  // numpy.percentile([1,2,3,4,5,100], 25)
  EXPECT_DOUBLE_EQ(b.median, 3.5);
  EXPECT_DOUBLE_EQ(b.p75, 4.75);
  EXPECT_DOUBLE_EQ(b.lo, 1);
  EXPECT_DOUBLE_EQ(b.hi, 5);
  ASSERT_EQ(b.outliers.size(), 1u);
  EXPECT_DOUBLE_EQ(b.outliers[0], 100);
  EXPECT_NEAR(b.mean, 115.0 / 6, 1e-12);
  const report::BoxStats empty = report::box_stats({NAN});
  EXPECT_EQ(empty.n, 0);
  EXPECT_TRUE(std::isnan(empty.median));
  EXPECT_TRUE(report::to_json(empty)["median"].is_null());
}

TEST(ReportTables, CsvReadsEmptyAndNanCells) {
  ScratchDir dir("report_csv");
  write_text(dir.path() / "a.csv", "id,x,y\r\nA,1.5,\nB,nan,2\nC\n");
  const report::CsvTable t = report::read_csv(dir.str("a.csv"));
  ASSERT_EQ(t.header.size(), 3u);
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.column("y"), 2);
  EXPECT_EQ(t.column("z"), -1);
  const std::vector<double> x = t.numbers("x"), y = t.numbers("y");
  EXPECT_DOUBLE_EQ(x[0], 1.5);
  EXPECT_TRUE(std::isnan(x[1]));
  EXPECT_TRUE(std::isnan(x[2]));  // short row padded
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_DOUBLE_EQ(y[1], 2);
  EXPECT_THROW(report::read_csv(dir.str("missing.csv")), Error);
}

TEST(ReportTables, BestPerColumnHigherDiceLowerHd95AndTies) {
  std::map<std::string, std::map<std::string, std::vector<double>>> v;
  v["a"]["dice_et"] = {0.8, 0.9};
  v["b"]["dice_et"] = {0.85, 0.85};  // ties with a at 3 decimals
  v["c"]["dice_et"] = {0.99, 0.99};  // auxiliary row: never best
  v["a"]["hd95_et"] = {3, 5};
  v["b"]["hd95_et"] = {2, 2};
  const nlohmann::json t = report::results_table({"a", "b", "c"}, v, {"c"});
  EXPECT_EQ(t["best"]["dice_et"], nlohmann::json({"a", "b"}));
  EXPECT_EQ(t["best"]["hd95_et"], nlohmann::json({"b"}));
  EXPECT_FALSE(t["best"].contains("dice_wt"));
  EXPECT_TRUE(t["rows"][2]["aux"].get<bool>());
  EXPECT_DOUBLE_EQ(t["rows"][0]["cells"]["dice_et"]["median"].get<double>(), 0.85);
}

TEST(ReportTables, MethodsInThePapersOrder) {
  EXPECT_EQ(report::order_methods({"student", "zeta", "unet", "ensemble", "cascade", "alpha"}),
            (std::vector<std::string>{"unet", "cascade", "ensemble", "student", "alpha", "zeta"}));
}

TEST(ReportTables, LongLogsKeepEveryValidationRow) {
  ScratchDir dir("report_log");
  std::string log = kLogHeader;
  for (int s = 1; s <= 1000; ++s)
    log += std::to_string(s) + ",0,1,,,,,,," +
           (s % 100 == 0 ? "0.5,0.5,0.5,0.5" : std::string(",,,")) + "\n";
  write_text(dir.path() / "log.csv", log);
  const nlohmann::json c = report::read_log_curve(dir.str("log.csv"), 100);
  EXPECT_LE(c["step"].size(), 120u);
  int n_val = 0;
  for (const auto& v : c["val_mean_dice"]) n_val += v.is_number();
  EXPECT_EQ(n_val, 10);
  EXPECT_EQ(c["step"].back().get<double>(), 1000);
  EXPECT_TRUE(c["dice_loss"][0].is_null());
}

TEST(ReportViewer, StaticSlicesGoThroughTheTumour) {
  const LabelMap l = phantom_labels({20, 20, 16}, {6, 12, 9}, 4);
  std::vector<uint8_t> grey(l.data.size(), 100);
  const auto c = report::slice_centre(grey, &l, l.dim);
  EXPECT_EQ(c, (std::array<int64_t, 3>{6, 12, 9}));
  const RgbImage img = report::render_slices(grey, &l, l.dim, l.spacing, c, 64);
  EXPECT_GT(img.width, 3 * 48);
  int coloured = 0;
  for (size_t i = 0; i + 2 < img.px.size(); i += 3)
    coloured += img.px[i] != img.px[i + 1] || img.px[i + 1] != img.px[i + 2];
  EXPECT_GT(coloured, 50);  // the labels are drawn over the grey
}

TEST(ReportViewer, ViewVolumesAreNiftiThatKdsegReadsBack) {
  std::vector<uint8_t> v(4 * 5 * 6);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i);
  const std::vector<uint8_t> gz = report::encode_view_volume(v, {4, 5, 6}, {2, 2, 3}, 255);
  ScratchDir dir("report_nii");
  write_file_atomic(dir.str("v.nii.gz"), gz.data(), gz.size());
  const LabelMap back = read_labels(dir.str("v.nii.gz"));
  EXPECT_EQ(back.dim, (std::array<int64_t, 3>{4, 5, 6}));
  EXPECT_EQ(back.spacing, (std::array<double, 3>{2, 2, 3}));
  EXPECT_EQ(back.data, v);  // canonical grid in, canonical grid out
}

// ---------------------------------------------------------------- the report folder

TEST(ReportFolder, ExperimentGivesEverySection) {
  ScratchDir dir("report_exp");
  make_experiment(dir.path() / "exp");
  const ReportSummary s = write_report(options(dir.path() / "exp", dir.path() / "out"));
  const fs::path out = dir.path() / "out";
  EXPECT_EQ(s.kind, "experiment");
  EXPECT_EQ(s.n_methods, 2);
  EXPECT_EQ(s.n_curves, 2);
  EXPECT_EQ(s.n_viewer_cases, 2);
  EXPECT_EQ(s.index_html, (out / "index.html").string());
  for (const char* f : {"index.html", "report.css", "report.js", "report.json"})
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  const std::string html = read_text(out / "index.html");
  EXPECT_NE(html.find("window.KDSEG_REPORT = {"), std::string::npos);
  EXPECT_EQ(html.find("<!--KDSEG:"), std::string::npos);  // every placeholder filled
  EXPECT_EQ(html.find("<script src=\"niivue.umd.js\">") != std::string::npos, s.niivue);
  EXPECT_EQ(fs::is_regular_file(out / "niivue.umd.js"), s.niivue);

  const nlohmann::json page = read_json(out / "report.json");
  EXPECT_EQ(page["table"]["best"]["dice_et"], nlohmann::json({"student"}));
  EXPECT_EQ(page["table"]["best"]["dice_wt"], nlohmann::json({"unet"}));
  EXPECT_EQ(page["table"]["best"]["hd95_wt"], nlohmann::json({"student"}));
  EXPECT_EQ(page["table"]["best"]["hd95_et"], nlohmann::json({"unet"}));  // 373.13 counts
  EXPECT_EQ(page["table"]["rows"][1]["cells"]["dice_et"]["n_nan"], 1);
  EXPECT_EQ(page["boxes"]["data"]["wt"]["unet"]["n"], 2);
  EXPECT_EQ(page["runs"].size(), 2u);
  EXPECT_EQ(page["runs"][0]["log"]["val_mean_dice"][2], 0.6);
  EXPECT_EQ(page["timing"]["train"], 49.0);
  EXPECT_EQ(page["paired"][0]["verdict"], "n.s.");
  EXPECT_EQ(page["config"]["command"], "reproduce");
  EXPECT_EQ(page["viewer"]["seed"], 1);
  EXPECT_EQ(page["case_dice"]["1"]["student"]["CASE_A"]["et"], 0.8);

  const nlohmann::json& c0 = page["viewer"]["cases"][0];
  EXPECT_EQ(c0["id"], "CASE_A");
  EXPECT_EQ(c0["sources"], nlohmann::json({"reference", "unet", "student"}));
  EXPECT_EQ(c0["dim"], nlohmann::json({32, 32, 24}));
  for (const char* src : {"flair", "reference", "unet", "student"}) {
    ASSERT_TRUE(c0["png"].contains(src)) << src;
    EXPECT_TRUE(is_png(out / c0["png"][src].get<std::string>())) << src;
  }
  const std::string data = read_text(out / "data" / "case_000.js");
  EXPECT_EQ(data.rfind("kdsegCase(0, \"main\", {", 0), 0u);
  for (const char* key : {"\"flair\":", "\"reference\":", "\"student\":"})
    EXPECT_NE(data.find(key), std::string::npos) << key;
  EXPECT_EQ(data.find("\"t1ce\":"), std::string::npos);  // loaded when asked for
  EXPECT_EQ(c0["scripts"]["t1ce"], "data/case_000_t1ce.js");
  EXPECT_EQ(read_text(out / "data" / "case_000_t1ce.js").rfind("kdsegCase(0, \"t1ce\", {", 0), 0u);
  EXPECT_TRUE(fs::is_regular_file(out / "data" / "case_001.js"));
}

// --lesion-wise: the lw_* columns of metrics.csv join the results table, HD95 lower is better.
TEST(ReportFolder, LesionWiseColumnsWhenAsked) {
  ScratchDir dir("report_lesion");
  make_experiment(dir.path() / "exp");
  ReportOptions opt = options(dir.path() / "exp", dir.path() / "out");
  opt.max_viewer_cases = 0;
  opt.lesion_wise = true;
  // Without lw_* columns: the whole-volume table and a note saying how to get them.
  ReportSummary s = write_report(opt);
  bool noted = false;
  for (const auto& n : s.notes) noted |= n.find("no lw_* columns") != std::string::npos;
  EXPECT_TRUE(noted);
  const std::string lw = ",lw_dice_et,lw_dice_wt,lw_dice_tc,lw_hd95_et,lw_hd95_wt,lw_hd95_tc\n";
  write_text(dir.path() / "exp" / "seed1" / "eval" / "unet" / "metrics.csv",
             "id,dice_et,dice_wt,dice_tc,hd95_et,hd95_wt,hd95_tc" + lw +
                 "CASE_A,0.60,0.95,0.70,4.0,2.0,3.0,0.5,0.9,0.6,100,20,50\n"
                 "CASE_B,0.70,0.93,0.72,5.0,2.5,3.5,0.6,0.9,0.6,120,30,60\n");
  write_text(dir.path() / "exp" / "seed1" / "eval" / "student" / "metrics.csv",
             "id,dice_et,dice_wt,dice_tc,hd95_et,hd95_wt,hd95_tc" + lw +
                 "CASE_A,0.80,0.90,0.85,2.0,1.0,1.5,0.7,0.6,0.8,10,200,5\n"
                 "CASE_B,0.75,0.88,0.83,3.0,1.5,2.0,0.7,0.6,0.8,12,190,7\n");
  s = write_report(opt);
  nlohmann::json page = read_json(dir.path() / "out" / "report.json");
  EXPECT_EQ(page["table"]["columns"].size(), 12u);
  EXPECT_EQ(page["table"]["columns"][6], "lw_dice_et");
  EXPECT_EQ(page["table"]["best"]["lw_dice_wt"], nlohmann::json({"unet"}));
  EXPECT_EQ(page["table"]["best"]["lw_dice_et"], nlohmann::json({"student"}));
  EXPECT_EQ(page["table"]["best"]["lw_hd95_wt"], nlohmann::json({"unet"}));  // lower is better
  EXPECT_DOUBLE_EQ(page["table"]["rows"][1]["cells"]["lw_hd95_et"]["mean"].get<double>(), 11);
  // Not asked: the paper's six columns, whatever metrics.csv holds.
  opt.lesion_wise = false;
  write_report(opt);
  page = read_json(dir.path() / "out" / "report.json");
  EXPECT_EQ(page["table"]["columns"].size(), 6u);
  EXPECT_TRUE(report::lower_is_better("lw_hd95_tc"));
  EXPECT_FALSE(report::lower_is_better("lw_dice_tc"));
}

TEST(ReportFolder, ViewerCasesCanBeLimitedAndStaleDataGoes) {
  ScratchDir dir("report_limit");
  make_experiment(dir.path() / "exp");
  ReportOptions opt = options(dir.path() / "exp", dir.path() / "out");
  write_report(opt);
  ASSERT_TRUE(fs::is_regular_file(dir.path() / "out" / "data" / "case_001.js"));
  opt.max_viewer_cases = 1;
  const ReportSummary s = write_report(opt);
  EXPECT_EQ(s.n_viewer_cases, 1);
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "data" / "case_001.js"));
  EXPECT_TRUE(any_note_contains(s.notes, "first 1 of 2"));
}

TEST(ReportFolder, MissingPartsAreNotedNotFatal) {
  ScratchDir dir("report_missing");
  const fs::path exp = dir.path() / "exp";
  make_experiment(exp, /*with_predictions=*/false);
  fs::remove_all(exp / "seed1" / "runs");
  fs::remove(exp / "config.json");
  ReportOptions opt = options(exp, "");
  opt.niivue = "none";
  const ReportSummary s = write_report(opt);
  EXPECT_EQ(s.index_html, (exp / "report" / "index.html").string());  // default --out
  EXPECT_FALSE(s.niivue);
  EXPECT_EQ(s.n_curves, 0);
  EXPECT_EQ(s.n_viewer_cases, 2);  // references only
  EXPECT_TRUE(any_note_contains(s.notes, "no predictions found"));
  EXPECT_TRUE(any_note_contains(s.notes, "no curves"));
  EXPECT_TRUE(any_note_contains(s.notes, "config.json not found"));
  EXPECT_TRUE(any_note_contains(s.notes, "--niivue none"));
  EXPECT_FALSE(fs::exists(exp / "report" / "niivue.umd.js"));
  const nlohmann::json page = read_json(exp / "report" / "report.json");
  EXPECT_EQ(page["viewer"]["cases"][0]["sources"], nlohmann::json({"reference"}));

  // No metrics.csv: the table comes from results.json (mean ± std over seeds), no box plots.
  fs::remove_all(exp / "seed1" / "eval");
  write_text(exp / "results.json",
             "{\"methods\": [\"unet\", \"student\"], \"seeds\": [1], \"table\": {"
             "\"unet\": {\"dice_et\": {\"mean\": 0.7, \"std\": 0.1}},"
             "\"student\": {\"dice_et\": {\"mean\": 0.75, \"std\": 0.05}}}}");
  const ReportSummary s2 = write_report(opt);
  EXPECT_EQ(s2.n_methods, 2);
  EXPECT_TRUE(any_note_contains(s2.notes, "no box plots"));
  const nlohmann::json page2 = read_json(exp / "report" / "report.json");
  EXPECT_EQ(page2["table"]["best"]["dice_et"], nlohmann::json({"student"}));
  EXPECT_FALSE(page2.contains("boxes"));
}

TEST(ReportFolder, TrainingRunHasCurvesAndSaysWhyNoViewer) {
  ScratchDir dir("report_run");
  const fs::path run = dir.path() / "run";
  write_text(run / "log.csv",
             std::string(kLogHeader) + "1,0,1.5,,,,,,1,,,,\n5,0,1.0,,,,,,5,,,,0.3\n");
  write_text(run / "config.json", "{\"command\": \"train\", \"options\": {\"model\": \"unet\"}}");
  ReportOptions opt = options(run, dir.path() / "out");
  const ReportSummary s = write_report(opt);
  EXPECT_EQ(s.kind, "run");
  EXPECT_EQ(s.n_curves, 1);
  EXPECT_EQ(s.n_methods, 0);
  EXPECT_EQ(s.n_viewer_cases, 0);
  EXPECT_TRUE(any_note_contains(s.notes, "no slice viewer"));
  const nlohmann::json page = read_json(dir.path() / "out" / "report.json");
  EXPECT_EQ(page["runs"][0]["model"], "unet");
  EXPECT_EQ(page["config"]["options"]["model"], "unet");

  // Test cases and predictions given on the command line (a trailing slash still names it).
  make_experiment(dir.path() / "exp");
  opt.cases = (dir.path() / "exp" / "cohort" / "test").string();
  opt.pred = {(dir.path() / "exp" / "seed1" / "pred" / "unet").string() + "/"};
  opt.out = (dir.path() / "out3").string();
  EXPECT_EQ(write_report(opt).n_viewer_cases, 2);
  const nlohmann::json page3 = read_json(dir.path() / "out3" / "report.json");
  EXPECT_EQ(page3["viewer"]["cases"][1]["sources"], nlohmann::json({"reference", "unet"}));

  // A folder of runs.
  write_text(dir.path() / "runs" / "a" / "log.csv", std::string(kLogHeader) + "1,0,1,,,,,,1,,,,\n");
  write_text(dir.path() / "runs" / "b" / "log.csv", std::string(kLogHeader) + "1,0,2,,,,,,1,,,,\n");
  EXPECT_EQ(write_report(options(dir.path() / "runs", dir.path() / "out2")).n_curves, 2);
}

TEST(ReportFolder, UnknownFoldersAreLoudErrors) {
  ScratchDir dir("report_bad");
  EXPECT_THROW(write_report(options(dir.path() / "nope", dir.path() / "out")), Error);
  fs::create_directories(dir.path() / "empty");
  try {
    write_report(options(dir.path() / "empty", dir.path() / "out"));
    FAIL() << "an empty folder was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("neither an experiment"), std::string::npos);
  }
  ReportOptions opt = options(dir.path() / "empty", dir.path() / "out");
  make_experiment(dir.path() / "empty", false);
  opt.niivue = (dir.path() / "no_such.js").string();
  EXPECT_THROW(write_report(opt), Error);  // an explicit --niivue must exist
  opt.niivue = "none";
  opt.out = opt.run + "/";
  EXPECT_THROW(write_report(opt), Error);  // never into the folder reported on
}

TEST(ReportCli, WritesTheReportAndItsConfig) {
  ScratchDir dir("report_cli");
  make_experiment(dir.path() / "exp");
  const std::string out = dir.str("out");
  test::RunResult r =
      run_kdseg("report --run " + dir.str("exp") + " --out " + out + " --niivue none --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("index.html"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_regular_file(fs::path(out) / "index.html"));
  const nlohmann::json cfg = read_json(fs::path(out) / "config.json");
  EXPECT_EQ(cfg["command"], "report");
  EXPECT_EQ(cfg["options"]["max-viewer-cases"], 12);
  r = run_kdseg("report --run " + dir.str("missing") + " --out " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is not a folder"), std::string::npos) << r.output;
  r = run_kdseg("report --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--niivue"), std::string::npos);
}

// ---------------------------------------------------------------- the page in a browser

// Debian's chromium (scripts/setup.sh installs it), or $KDSEG_CHROMIUM; "" when absent.
std::string find_chromium() {
  if (const char* env = std::getenv("KDSEG_CHROMIUM"); env && *env) return env;
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    const test::RunResult r = run_command(std::string("command -v ") + name);
    if (r.exit_code == 0 && !r.output.empty()) return r.output.substr(0, r.output.find('\n'));
  }
  return "";
}

struct PageRun {
  std::string dom, log;
};

// The command line that opens `url` headless, writes `shot` and the DOM once the page has had
// `budget_ms` of (virtual) time, with the browser's log (console messages included) in `log`.
std::string chromium_command(const std::string& chromium, const std::string& url,
                             const fs::path& profile, const fs::path& shot, const fs::path& dom,
                             const fs::path& log, const std::string& extra) {
  return "timeout 150 " + chromium +
         " --headless --no-sandbox --use-angle=swiftshader --enable-unsafe-swiftshader"
         " --no-first-run --disable-extensions --disable-dev-shm-usage --hide-scrollbars"
         " --user-data-dir=" +
         profile.string() + " --window-size=1280,900" +
         " --virtual-time-budget=5000 --enable-logging=stderr --v=0 " + extra +
         " --screenshot=" + shot.string() + " --dump-dom '" + url + "' > " + dom.string() + " 2> " +
         log.string();
}

// What the page reported about itself: its title, its error list, and the browser's log.
void expect_clean_page(const std::string& dom, const std::string& log, const std::string& title,
                       const std::string& what) {
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dom, m, std::regex("<title>([^<]*)</title>")))
      << what << ": no DOM was dumped; browser log:\n"
      << log.substr(0, 4000);
  EXPECT_EQ(m[1].str(), title) << what << ": the page did not signal readiness";
  ASSERT_TRUE(std::regex_search(dom, m, std::regex("<pre id=\"kdseg-errors\"[^>]*>([^<]*)</pre>")))
      << what;
  EXPECT_EQ(m[1].str(), "") << what << ": errors on the page";
  // Console messages reach the log as ":CONSOLE"; uncaught errors say "Uncaught".
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find(":CONSOLE") != std::string::npos)
      EXPECT_EQ(line.find("Uncaught"), std::string::npos) << what << ": " << line;
}

TEST(ReportBrowser, OpensInHeadlessChromiumWithNiiVueAndWithoutWebGL) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (bash scripts/setup.sh)";
  ASSERT_FALSE(niivue_bundle().empty())
      << "NiiVue is missing from third_party/niivue/: run bash scripts/web_deps.sh";
  ScratchDir dir("report_browser");
  make_experiment(dir.path() / "exp");
  const ReportSummary s = write_report(options(dir.path() / "exp", dir.path() / "out"));
  ASSERT_TRUE(s.niivue);
  const std::string url = "file://" + fs::absolute(s.index_html).string();
  const fs::path d = dir.path();
  // Two pages at once: the viewer on WebGL2 (?viewer: the viewer alone, so that the screenshot
  // shows it; opened on the second case's T1ce, a modality loaded on demand), and the whole page
  // with WebGL switched off (the PNG fallback).
  const auto t0 = std::chrono::steady_clock::now();
  const std::string gl_url = url + "?viewer&case=CASE_B&image=t1ce&method=student";
  const test::RunResult r = run_command(
      "(" +
      chromium_command(chromium, gl_url, d / "p1", d / "gl.png", d / "gl.html", d / "gl.log", "") +
      ") & (" +
      chromium_command(chromium, url, d / "p2", d / "static.png", d / "static.html",
                       d / "static.log", "--disable-3d-apis") +
      "); wait");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ report ] headless chromium: " << seconds << " s\n";

  const std::string gl_dom = read_text(d / "gl.html"), gl_log = read_text(d / "gl.log");
  expect_clean_page(gl_dom, gl_log, "kdseg report: ready", "NiiVue page");
  EXPECT_NE(gl_dom.find("data-viewer=\"niivue\""), std::string::npos);
  EXPECT_NE(gl_dom.find("CASE_B: 32×32×24 voxels"), std::string::npos) << "not the case asked for";
  EXPECT_NE(gl_dom.find("data/case_001_t1ce.js"), std::string::npos) << "T1ce was not loaded";
  EXPECT_NE(gl_dom.find("student Dice: ET –, WT 0.880, TC 0.830"), std::string::npos);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(gl_dom, m, std::regex("data-painted=\"([0-9]+)\"")))
      << "the viewer never drew";
  EXPECT_GT(std::stol(m[1].str()), 5000) << "too few non-background pixels in the viewer";
  ASSERT_TRUE(fs::is_regular_file(d / "gl.png")) << gl_log.substr(0, 4000);
  EXPECT_TRUE(is_png(d / "gl.png"));
  EXPECT_GT(fs::file_size(d / "gl.png"), 20000u) << "the screenshot looks blank";

  const std::string st_dom = read_text(d / "static.html"), st_log = read_text(d / "static.log");
  expect_clean_page(st_dom, st_log, "kdseg report: ready (static slices)", "page without WebGL");
  EXPECT_NE(st_dom.find("data-viewer=\"static\""), std::string::npos);
  EXPECT_NE(st_dom.find("src=\"png/case_000_reference.png\""), std::string::npos);
  EXPECT_NE(st_dom.find("id=\"results-table\""), std::string::npos);
  // Training table: a run without validation shows a dash, not done.json's -1.
  EXPECT_NE(st_dom.find("<td>unet (seed 1)</td><td>20</td><td>0.600</td><td>20</td>"),
            std::string::npos);
  EXPECT_NE(st_dom.find("<td>student (seed 1)</td><td>20</td><td>—</td><td>—</td>"),
            std::string::npos);
  EXPECT_EQ(st_dom.find("-1.000"), std::string::npos);
  EXPECT_TRUE(is_png(d / "static.png"));

  // Kept beside the test binary for a person to look at.
  std::error_code ec;
  fs::copy_file(d / "gl.png", "report_viewer_screenshot.png", fs::copy_options::overwrite_existing,
                ec);
  fs::copy_file(d / "static.png", "report_page_screenshot.png",
                fs::copy_options::overwrite_existing, ec);
}

}  // namespace
}  // namespace kdseg
