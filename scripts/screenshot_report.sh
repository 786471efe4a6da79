#!/usr/bin/env bash
# Render a run's report.html in real headless Chromium and save a screenshot.
#
#   scripts/screenshot_report.sh [RUN_DIR] [OUT_PNG]
#
# RUN_DIR defaults to runs/demo (what `make demo` writes), OUT_PNG to
# docs/img/report_screenshot.png. Needs Debian's `chromium`
# (`apt-get install -y chromium`). The browser runs with networking features
# off and a throw-away profile: the report must render from the file alone.
# Fails (exit 1) when Chromium errors or the screenshot is missing/empty.
set -euo pipefail
RUN_DIR=${1:-runs/demo}
OUT=${2:-docs/img/report_screenshot.png}
REPORT="$RUN_DIR/report.html"
BROWSER=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$BROWSER" ]]; then
    echo "error: chromium not found; install it with: apt-get install -y chromium" >&2
    exit 1
fi
if [[ ! -f "$REPORT" ]]; then
    echo "error: $REPORT not found; run 'make demo' (or sktx demo --out $RUN_DIR) first" >&2
    exit 1
fi
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"$BROWSER" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$PROFILE" \
    --screenshot="$(realpath -m "$OUT")" --window-size=1280,2000 \
    "file://$(realpath "$REPORT")" 2> "$PROFILE/chromium.log" || {
    cat "$PROFILE/chromium.log" >&2
    exit 1
}
if [[ ! -s "$OUT" ]]; then
    echo "error: no screenshot written; chromium log:" >&2
    cat "$PROFILE/chromium.log" >&2
    exit 1
fi
echo "screenshot of $REPORT -> $OUT ($(stat -c %s "$OUT") bytes)"
