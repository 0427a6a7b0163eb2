#!/usr/bin/env bash
# Make sure Graphviz's `dot` is on PATH: install it with apt-get when that is possible, otherwise say how.
set -u
if command -v dot >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "Graphviz's dot is missing: installing it with apt-get"
  if $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq graphviz >/dev/null; then
    command -v dot >/dev/null 2>&1 && exit 0
  fi
  echo "apt-get could not install graphviz." >&2
fi
cat >&2 <<'MSG'
WARNING: Graphviz's `dot` is not installed, so diagrams will be written as .dot source only
and the tests that render diagrams are skipped. Install it with one of:
  sudo apt-get install graphviz      (Debian/Ubuntu)
  sudo dnf install graphviz          (Fedora)
  brew install graphviz              (macOS)
  conda install -c conda-forge graphviz
MSG
exit 0
