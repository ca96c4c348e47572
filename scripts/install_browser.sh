#!/usr/bin/env bash
# Chromium for the browser test of `guidance-tui serve` (tests/test_serve.py): Debian's `chromium`
# package, driven by Playwright's Python package (`playwright install` is never run: it downloads a
# browser build of its own).  Idempotent.  When Chromium cannot be installed (not root, no apt-get),
# it says so and the browser test is skipped, saying why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "the browser test of 'serve' will be skipped" >&2
    exit 0
fi
echo "installing chromium (Debian package, about 350 MB, a minute)..." >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "install_browser.sh: apt-get could not install chromium; the browser test of 'serve' will be skipped" >&2
fi
exit 0
