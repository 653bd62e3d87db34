#!/usr/bin/env bash
# Refreshes the vendored uPlot from the npm registry (pinned version).
set -euo pipefail
version="${1:-1.6.32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack "uplot@${version}" >/dev/null
tar xzf uplot-*.tgz
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css "$root/assets/vendor/"
cp package/LICENSE "$root/assets/vendor/uPlot.LICENSE"
echo "uplot ${version} vendored into assets/vendor/"
