#!/usr/bin/env bash
# Installs ONNX Runtime for Node.js (onnxruntime-node + onnxruntime-common, MIT) from the npm
# registry into third_party/onnxruntime-node/node_modules/ (git-ignored; never committed), keeping
# only this platform's native library. The ONNX export tests (tests/models/test_python_export.cpp)
# run exported files in it with /usr/bin/node; without it they check the files but do not run them.
# ONNX Runtime is not packaged by Debian. Idempotent and quiet when the pinned version is there.
# Needs npm and node (scripts/setup.sh).
set -euo pipefail

version=${ONNXRUNTIME_NODE_VERSION:-1.31.1}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/third_party/onnxruntime-node/node_modules

if [[ -f $dest/onnxruntime-node/package.json ]] &&
  grep -q "\"version\": *\"$version\"" "$dest/onnxruntime-node/package.json"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "onnx_deps: npm or node not found (apt-get install npm); ONNX files will not be run" >&2
  exit 1
fi
platform=$(node -p process.platform)
arch=$(node -p process.arch)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "onnx_deps: fetching onnxruntime-node@$version ($platform/$arch, ~115 MB download)"
# npm pack checks each tarball against the registry's integrity hash; no install scripts run (the
# CPU library is in the tarball; the postinstall script only fetches CUDA providers).
(cd "$tmp" && npm pack --silent --ignore-scripts "onnxruntime-node@$version" \
  "onnxruntime-common@$version" >/dev/null)
mkdir -p "$tmp/node" "$tmp/common"
tar -xzf "$tmp/onnxruntime-node-$version.tgz" -C "$tmp/node" --strip-components=1 \
  package/package.json package/README.md package/dist "package/bin/napi-v6/$platform/$arch"
tar -xzf "$tmp/onnxruntime-common-$version.tgz" -C "$tmp/common" --strip-components=1
rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp/node" "$dest/onnxruntime-node"
mv "$tmp/common" "$dest/onnxruntime-common"
NODE_PATH=$dest node -e "require('onnxruntime-node')" ||
  { echo "onnx_deps: onnxruntime-node $version does not load on this machine" >&2; exit 1; }
echo "onnx_deps: onnxruntime-node $version -> ${dest#"$root"/}"
