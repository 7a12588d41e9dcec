#include "kdseg/report/report.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "kdseg/io/gzip.h"
#include "kdseg/report/collect.h"
#include "kdseg/report/viewer.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/progress.h"

namespace kdseg {

namespace fs = std::filesystem;

namespace {

// The page's files in web/report/ (index.html holds the two placeholders below).
const char* const kWebFiles[] = {"index.html", "report.css", "report.js"};
const char* const kDataPlaceholder = "<!--KDSEG:DATA-->";
const char* const kNiivuePlaceholder = "<!--KDSEG:NIIVUE-->";

fs::path exe_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

// The source tree this file was compiled from (CMake passes absolute paths), or "".
fs::path source_root() {
  const fs::path here(__FILE__);
  if (!here.is_absolute()) return {};
  return (here.parent_path() / ".." / ".." / "..").lexically_normal();
}

std::string read_text(const fs::path& path) {
  const std::vector<uint8_t> bytes = read_file(path.string());
  return std::string(bytes.begin(), bytes.end());
}

void write_text(const fs::path& path, const std::string& text) {
  write_file_atomic(path.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

void copy_atomic(const fs::path& from, const fs::path& to) {
  const std::vector<uint8_t> bytes = read_file(from.string());
  write_file_atomic(to.string(), bytes.data(), bytes.size());
}

void replace_once(std::string& text, const std::string& what, const std::string& with,
                  const fs::path& file) {
  const size_t at = text.find(what);
  if (at == std::string::npos)
    throw Error(file.string(), "has no " + what + " placeholder",
                "restore web/report/index.html from the kdseg sources");
  text.replace(at, what.size(), with);
}

// JSON that is safe inside an HTML <script> element: ASCII only, no "</".
std::string script_json(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<' && i + 1 < s.size() && s[i + 1] == '/') {
      out += "<\\/";
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string now_iso() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

fs::path find_web_dir(const std::string& given) {
  if (!given.empty()) {
    if (!fs::is_regular_file(fs::path(given) / "index.html"))
      throw Error("--web " + given, "holds no index.html",
                  "point it at the web/report folder of the kdseg sources");
    return given;
  }
  for (const auto& p : report_web_search_paths())
    if (fs::is_regular_file(fs::path(p) / "index.html")) return p;
  std::string tried;
  for (const auto& p : report_web_search_paths()) tried += "\n  " + p;
  throw Error("kdseg report",
              "cannot find the page template (web/report/index.html); tried:" + tried,
              "pass --web DIR (the web/report folder of the kdseg sources) or set KDSEG_WEB_DIR");
}

// The NiiVue bundle to copy, or "" (with a note) when there is none.
fs::path find_niivue(const std::string& given, std::vector<std::string>& notes) {
  if (given == "none") {
    notes.push_back("NiiVue left out (--niivue none): the viewer shows static PNG slices");
    return {};
  }
  if (!given.empty()) {
    if (!fs::is_regular_file(given))
      throw Error("--niivue " + given, "no such file",
                  "give the path of niivue.umd.js (bash scripts/web_deps.sh installs it under "
                  "third_party/niivue/), or --niivue none for static slices only");
    return given;
  }
  for (const auto& p : report_niivue_search_paths())
    if (fs::is_regular_file(p)) return p;
  notes.push_back(
      "NiiVue not found (run scripts/web_deps.sh, or pass --niivue PATH): the viewer shows "
      "static PNG slices only");
  return {};
}

// "NiiVue 0.69.0 (BSD-2-Clause)" from the package.json that web_deps.sh keeps beside the bundle.
nlohmann::json niivue_info(const fs::path& bundle) {
  nlohmann::json info = {{"name", "NiiVue"}, {"license", "BSD-2-Clause"}};
  const fs::path pkg = bundle.parent_path() / "package.json";
  if (fs::is_regular_file(pkg)) {
    try {
      std::ifstream in(pkg);
      const nlohmann::json j = nlohmann::json::parse(in);
      info["version"] = j.value("version", "");
      info["license"] = j.value("license", "BSD-2-Clause");
    } catch (const nlohmann::json::exception&) {
    }
  }
  return info;
}

}  // namespace

std::vector<std::string> report_niivue_search_paths() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("KDSEG_NIIVUE"); env && *env) out.push_back(env);
  const fs::path exe = exe_dir();
  if (!exe.empty()) {
    out.push_back((exe / ".." / "share" / "kdseg" / "niivue" / "niivue.umd.js").lexically_normal());
    out.push_back((exe / ".." / "third_party" / "niivue" / "niivue.umd.js").lexically_normal());
  }
  const fs::path src = source_root();
  if (!src.empty()) out.push_back(src / "third_party" / "niivue" / "niivue.umd.js");
  return out;
}

std::vector<std::string> report_web_search_paths() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("KDSEG_WEB_DIR"); env && *env) out.push_back(env);
  const fs::path exe = exe_dir();
  if (!exe.empty()) {
    out.push_back((exe / ".." / "share" / "kdseg" / "web" / "report").lexically_normal());
    out.push_back((exe / ".." / "web" / "report").lexically_normal());
  }
  const fs::path src = source_root();
  if (!src.empty()) out.push_back(src / "web" / "report");
  return out;
}

ReportSummary write_report(const ReportOptions& opt) {
  report::Collected c = report::collect(opt);
  const fs::path web = find_web_dir(opt.web);
  const fs::path niivue = find_niivue(opt.niivue, c.notes);
  const fs::path out = opt.out.empty() ? fs::path(opt.run) / "report" : fs::path(opt.out);
  std::error_code ec_out, ec_run;
  const fs::path out_real = fs::weakly_canonical(out, ec_out);
  if (!ec_out && out_real == fs::weakly_canonical(opt.run, ec_run) && !ec_run)
    throw Error(
        "--out " + out.string(), "is the folder being reported on",
        "give the report a folder of its own, e.g. " + (fs::path(opt.run) / "report").string());
  fs::create_directories(out);
  // Data of an earlier report in the same folder would be stale: only our own sub-folders go.
  for (const char* sub : {"data", "png"}) fs::remove_all(out / sub);

  // The viewer: the first max_viewer_cases test cases, prepared in parallel.
  const size_t n_cases =
      std::min(c.viewer.size(), static_cast<size_t>(std::max(0, opt.max_viewer_cases)));
  std::vector<nlohmann::json> entries(n_cases);
  std::vector<std::string> failures(n_cases);
  {
    Progress progress("report", static_cast<int64_t>(n_cases), opt.quiet);
    parallel_for(static_cast<int64_t>(n_cases), opt.threads, [&](int64_t i) {
      const auto& vc = c.viewer[static_cast<size_t>(i)];
      try {
        entries[static_cast<size_t>(i)] =
            report::write_viewer_case(vc, static_cast<int>(i), out.string(), opt.panel_px);
        progress.done(vc.files.id, "ok");
      } catch (const std::exception& e) {
        failures[static_cast<size_t>(i)] = vc.files.id + ": " + e.what();
        progress.done(vc.files.id, std::string("FAILED: ") + e.what());
      }
    });
  }
  nlohmann::json viewer = {
      {"cases", nlohmann::json::array()},
      {"seed", c.viewer_seed >= 0 ? nlohmann::json(c.viewer_seed) : nlohmann::json()},
      {"cases_dir", c.viewer_cases_dir},
      {"n_available", c.viewer.size()}};
  for (size_t i = 0; i < n_cases; ++i) {
    if (!failures[i].empty()) {
      c.notes.push_back("viewer case left out: " + failures[i]);
      continue;
    }
    for (const auto& p : entries[i]["problems"])
      c.notes.push_back("viewer, case " + entries[i]["id"].get<std::string>() + ": " +
                        p.get<std::string>());
    viewer["cases"].push_back(entries[i]);
  }
  if (c.viewer.size() > n_cases)
    c.notes.push_back("the viewer shows the first " + std::to_string(n_cases) + " of " +
                      std::to_string(c.viewer.size()) +
                      " test cases (--max-viewer-cases to change)");

  nlohmann::json page = c.page;
  page["kind"] = c.kind;
  page["title"] = report::folder_name(opt.run);
  page["kdseg_version"] = KDSEG_VERSION;
  page["generated"] = now_iso();
  page["viewer"] = viewer;
  page["niivue"] = niivue.empty() ? nlohmann::json() : niivue_info(niivue);
  page["notes"] = c.notes;

  // The page: template + inlined data, its style and code, NiiVue beside it.
  std::string html = read_text(web / "index.html");
  replace_once(html, kDataPlaceholder,
               "<script>window.KDSEG_REPORT = " + script_json(page) + ";</script>",
               web / "index.html");
  replace_once(html, kNiivuePlaceholder,
               niivue.empty() ? "" : "<script src=\"niivue.umd.js\"></script>", web / "index.html");
  for (const char* f : kWebFiles)
    if (std::string(f) != "index.html") copy_atomic(web / f, out / f);
  if (!niivue.empty()) {
    copy_atomic(niivue, out / "niivue.umd.js");
    const nlohmann::json info = page["niivue"];
    write_text(out / "niivue.txt",
               "niivue.umd.js: NiiVue " + info.value("version", std::string("")) + " (" +
                   info.value("license", std::string("BSD-2-Clause")) +
                   "), https://github.com/niivue/niivue, copied from " + niivue.string() + "\n");
  } else {
    fs::remove(out / "niivue.umd.js");
    fs::remove(out / "niivue.txt");
  }
  write_text(out / "report.json",
             page.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  write_text(out / "index.html", html);

  ReportSummary s;
  s.index_html = (out / "index.html").string();
  s.kind = c.kind;
  s.n_methods = page.contains("table") ? static_cast<int>(page["table"]["rows"].size()) : 0;
  for (const auto& r : page.value("runs", nlohmann::json::array()))
    if (r.contains("log")) ++s.n_curves;
  s.n_viewer_cases = static_cast<int>(viewer["cases"].size());
  s.niivue = !niivue.empty();
  s.notes = c.notes;
  return s;
}

}  // namespace kdseg
