#!/usr/bin/env bash
# Prepares, on a Debian 12 machine with apt (this development machine), the non-torch
# dependencies that bench/gpu.sh needs on a GPU machine that has pip PyTorch, CMake and ninja but
# no apt and no internet: the Debian packages are downloaded (apt-get download, no root needed)
# and unpacked with dpkg -x into one folder, which the device tool carries along.
#
#   bench/gpu_deps.sh [DIR]        default DIR: build/gpu_deps  →  DIR/debs/*.deb, DIR/root/usr/...
#
# Then carry DIR/root (about 13 MB) to the GPU machine and run bench/gpu.sh there with it.
#
# Header-only: nlohmann-json3-dev, libcli11-dev. Static archives (linked in, so no
# LD_LIBRARY_PATH there): libdeflate-dev (libdeflate.a), zlib1g-dev (libz.a), libgtest-dev and
# libgmock-dev (libgtest*.a, libgmock*.a; Debian's GTest CMake config needs both). All are built
# with the C++11 ABI, as pip PyTorch ≥ 2.7 is.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/build/gpu_deps}
pkgs=(libdeflate-dev libdeflate0 libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev zlib1g-dev)

rm -rf "$dir/debs" "$dir/root"
mkdir -p "$dir/debs" "$dir/root"
(cd "$dir/debs" && apt-get download "${pkgs[@]}")
for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
# The Colin27 templates `kdseg synth` grows its cases on (Debian's mricron-data, 8.5 MB of it).
mkdir -p "$dir/root/usr/share/mricron/templates"
cp /usr/share/mricron/templates/ch2bet.nii.gz /usr/share/mricron/templates/ch2better.nii.gz \
   "$dir/root/usr/share/mricron/templates/"
# Documentation is not needed there; keep what travels small.
rm -rf "$dir/root/usr/share/doc" "$dir/root/usr/share/lintian" "$dir/root/usr/share/man"

root=$dir/root/usr
lib=$root/lib/x86_64-linux-gnu
for f in "$root/include/libdeflate.h" "$lib/libdeflate.a" "$root/include/zlib.h" "$lib/libz.a" \
         "$root/include/nlohmann/json.hpp" "$root/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" \
         "$root/include/CLI/CLI.hpp" "$root/share/cmake/CLI11/CLI11Config.cmake" \
         "$lib/libgtest.a" "$lib/libgmock.a" "$lib/cmake/GTest/GTestConfig.cmake" \
         "$root/share/mricron/templates/ch2bet.nii.gz"; do
  [[ -e $f ]] || { echo "gpu_deps: missing $f after unpacking" >&2; exit 1; }
done
echo "gpu_deps: $(ls "$dir/debs" | wc -l) packages in $dir/debs, unpacked in $dir/root"
du -sh "$dir/debs"; du -sh "$dir/root"
