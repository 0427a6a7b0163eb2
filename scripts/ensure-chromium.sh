#!/usr/bin/env bash
# Make sure a Chromium browser is on PATH for the browser tests (tests/test_docs_site.py): install Debian's
# `chromium` with apt-get when that is possible, otherwise say how. The tests fail without it unless
# SHAPETRACE_ALLOW_MISSING=chromium is set.
set -u
for exe in chromium chromium-browser google-chrome; do
  if command -v "$exe" >/dev/null 2>&1; then
    exit 0
  fi
done
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "Chromium is missing: installing it with apt-get (for the browser tests)"
  if $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; then
    command -v chromium >/dev/null 2>&1 && exit 0
  fi
  echo "apt-get could not install chromium." >&2
fi
cat >&2 <<'MSG'
WARNING: Chromium is not installed, so the browser tests of the documentation will FAIL.
Install it (sudo apt-get install chromium, or your system's chromium package), point
SHAPETRACE_CHROMIUM at a Chromium or Chrome binary, or set SHAPETRACE_ALLOW_MISSING=chromium
to skip those tests on purpose.
MSG
exit 0
