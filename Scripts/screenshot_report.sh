#!/usr/bin/env bash
# Takes a headless-Chromium screenshot of a self-contained HTML report (e.g. DIR/report.html from
# `silo simulate`) so that a person, or a session without a browser, can look at it.
#
#   Scripts/screenshot_report.sh FILE.html OUT.png [WIDTH,HEIGHT]
#
# WIDTH,HEIGHT is the window size in CSS pixels (default 1200,2000; content below is cut off).
# COLOR_SCHEME=dark renders the page as a reader who prefers dark mode would see it.
# Installs Debian's `chromium` package with apt-get if it is missing (sudo when not root).
#
# A sample report with every kind of block (and the awkward cases: NaN gaps, a flat series, an
# empty chart, 20 000 points, a log axis) comes from the test suite:
#   SILO_REPORT_DEMO=/tmp/silo-demo.html swift test --skip-build --scratch-path .build-report --filter ReportDemoTests
#   Scripts/screenshot_report.sh /tmp/silo-demo.html /tmp/silo-demo.png
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 FILE.html OUT.png [WIDTH,HEIGHT]" >&2
  exit 2
fi
html=$1
out=$2
size=${3:-1200,2000}
if [ ! -f "$html" ]; then
  echo "error: $html: no such file" >&2
  exit 1
fi

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then browser=$candidate; break; fi
done
if [ -z "$browser" ]; then
  echo "Installing chromium (apt-get)…" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  browser=chromium
fi

abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$profile" "$log"' EXIT

scheme_flags=()
if [ "${COLOR_SCHEME:-light}" = "dark" ]; then
  scheme_flags=(--force-dark-mode --blink-settings=preferredColorScheme=0)
fi

rm -f "$abs_out"
if ! timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$profile" "${scheme_flags[@]}" \
    --window-size="$size" --screenshot="$abs_out" "file://$abs_html" >"$log" 2>&1 || [ ! -s "$abs_out" ]; then
  cat "$log" >&2
  echo "error: $browser did not write $abs_out" >&2
  exit 1
fi
echo "$abs_out"
