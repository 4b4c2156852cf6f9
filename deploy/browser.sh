#!/usr/bin/env bash
# Makes sure Debian's chromium is there for the browser tests (Playwright drives it; it never
# downloads a browser of its own).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing Debian's chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
else
  echo "browser: the browser tests need Debian's chromium: apt-get install chromium fonts-noto-cjk" >&2
  exit 2
fi
