#!/usr/bin/env bash
# Makes sure Debian's chromium (and CJK fonts for the Chinese pages) are there for the browser
# tests. Playwright drives this chromium; it never downloads a browser of its own.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing Debian's ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "browser: the browser tests need Debian's ${missing[*]}: apt-get install ${missing[*]}" >&2
  exit 2
fi
