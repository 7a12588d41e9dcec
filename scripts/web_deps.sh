#!/usr/bin/env bash
# Installs the report's one web dependency, NiiVue (@niivue/niivue, BSD-2-Clause), from the npm
# registry into third_party/niivue/ (git-ignored; never committed): its self-contained UMD bundle
# niivue.umd.js and its package.json. `kdseg report` copies the bundle beside each index.html.
# Idempotent and quiet when the pinned version is already there. Needs npm (scripts/setup.sh).
set -euo pipefail

version=${NIIVUE_VERSION:-0.69.0}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/third_party/niivue

if [[ -f $dest/niivue.umd.js && -f $dest/package.json ]] &&
  grep -q "\"version\": *\"$version\"" "$dest/package.json"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "web_deps: npm not found (apt-get install npm); kdseg report will show static slices only" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "web_deps: fetching @niivue/niivue@$version"
# npm pack checks the tarball against the registry's integrity hash; no install scripts run.
(cd "$tmp" && npm pack --silent --ignore-scripts "@niivue/niivue@$version" >/dev/null)
tar -xzf "$tmp"/niivue-niivue-"$version".tgz -C "$tmp" package/dist/niivue.umd.js package/package.json
mkdir -p "$dest"
cp "$tmp/package/dist/niivue.umd.js" "$tmp/package/package.json" "$dest/"
echo "web_deps: NiiVue $version -> ${dest#"$root"/}/niivue.umd.js"
