#!/usr/bin/env bash
# Builds kdseg's .deb (cpack -G DEB in the build folder), installs it with apt-get (which checks its
# Depends against the machine's packages), and runs the installed /usr/bin/kdseg as a user would,
# in a folder outside the source tree: --version, synth of a tiny cohort, a few training steps,
# predict of one case from four files, export (where python3-torch is), and report, whose page template and NiiVue must come from
# /usr/share/kdseg. Then removes the package again (unless it was installed before).
# Needs root (or password-less sudo); without it, says so and exits 0. scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KDSEG_BUILD_DIR:-build}
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "package_test: skipped: installing the .deb needs root"
    exit 0
  fi
fi

(cd "$build" && cpack -G DEB >/dev/null)
deb=$(cd "$build" && pwd)/kdseg_$(sed -n 's/^project(kdseg VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)_$(dpkg --print-architecture).deb
[[ -f $deb ]] || { echo "package_test: $deb was not built" >&2; exit 1; }
echo "package_test: $(basename "$deb"): $(dpkg-deb -f "$deb" Depends)"

was_installed=0
if dpkg-query -W -f='${Status}' kdseg 2>/dev/null | grep -q "install ok installed"; then was_installed=1; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends "$deb" >/dev/null
work=$(mktemp -d)
cleanup() {
  cd /
  rm -rf "$work"
  if ((was_installed == 0)); then $SUDO apt-get remove -y -qq kdseg >/dev/null || true; fi
}
trap cleanup EXIT

kdseg=/usr/bin/kdseg
cd "$work"
"$kdseg" --version
"$kdseg" synth --out cohort --labeled 2 --unlabeled 0 --test 1 --spacing 3 --threads 2 --quiet
"$kdseg" train --data cohort/labeled --out run --steps 4 --patch 32,32,32 --val-every 0 \
  --model-options '{"widths":[8,16,32,64]}' --threads 2 --quiet
case_dir=$(ls -d cohort/test/*/ | head -1)
id=$(basename "$case_dir")
"$kdseg" predict --model run/checkpoints/last.pt --t1 "$case_dir/${id}_t1.nii.gz" \
  --t1ce "$case_dir/${id}_t1ce.nii.gz" --t2 "$case_dir/${id}_t2.nii.gz" \
  --flair "$case_dir/${id}_flair.nii.gz" --out one/seg.nii.gz --tta none --threads 2 --quiet
[[ -s one/seg.nii.gz ]] || { echo "package_test: predict wrote no one/seg.nii.gz" >&2; exit 1; }
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  # The installed Python package (share/kdseg/python), found relative to the installed binary.
  env -u KDSEG_PYTHONPATH "$kdseg" export --model run/checkpoints/last.pt --format torchscript \
    --out student.ts
  [[ -s student.ts ]] || { echo "package_test: export wrote no student.ts" >&2; exit 1; }
fi
env -u KDSEG_WEB_DIR -u KDSEG_NIIVUE "$kdseg" report --run run --cases cohort/test --out report \
  --threads 2 --quiet
for f in report/index.html report/niivue.umd.js; do
  [[ -s $f ]] || { echo "package_test: the report has no $f" >&2; exit 1; }
done
grep -q "/usr/share/kdseg/niivue/niivue.umd.js" report/niivue.txt ||
  { echo "package_test: NiiVue did not come from /usr/share/kdseg" >&2; exit 1; }
echo "package_test: the installed kdseg ran --version, synth, train, predict, export and report in $work"
