#!/usr/bin/env bash
# The Chinese text of invoice and statement PDFs needs a CJK font on the machine (billing/documents.py looks for
# one). Installs Debian's fonts-noto-cjk when it is missing and we run as root; otherwise says so and goes on
# (the PDFs are then written in English only).
set -euo pipefail
[ -d /usr/share/fonts/opentype/noto ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "fonts: installing Debian's fonts-noto-cjk (Chinese in PDF invoices and statements)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-noto-cjk >/dev/null \
    || echo "fonts: could not install fonts-noto-cjk; PDFs will be in English only" >&2
else
  echo "fonts: no CJK font found; PDFs will be in English only (apt-get install fonts-noto-cjk)" >&2
fi
