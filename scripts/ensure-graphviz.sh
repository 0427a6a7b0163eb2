#!/usr/bin/env bash
# Make sure Graphviz's `dot` is on PATH: install it with apt-get when that is possible, otherwise say how.
#
#   scripts/ensure-graphviz.sh             a missing dot is a warning (exit 0): diagrams are written as .dot
#   scripts/ensure-graphviz.sh --required  a missing dot is an error (exit 1): the diagram tests need it.
#                                          `make test` uses this; so does any run with CI=true.
# SHAPETRACE_ALLOW_NO_DOT=1 is the one explicit opt-out: then a missing dot is only a warning, and the tests
# that render diagrams are skipped (they fail otherwise).
set -u
required=0
if [ "${1:-}" = "--required" ] || [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
  required=1
fi
if [ "${SHAPETRACE_ALLOW_NO_DOT:-}" = "1" ]; then
  required=0
fi
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
if [ "$required" -eq 1 ]; then
  level="ERROR"
  consequence="The tests render diagrams with it, so they cannot run without it."
else
  level="WARNING"
  consequence="Diagrams will be written as .dot source only."
fi
cat >&2 <<MSG
$level: Graphviz's \`dot\` is not installed and could not be installed here.
$consequence Install it with one of:
  sudo apt-get install graphviz      (Debian/Ubuntu)
  sudo dnf install graphviz          (Fedora)
  brew install graphviz              (macOS)
  conda install -c conda-forge graphviz
MSG
if [ "$required" -eq 1 ]; then
  echo "To run the tests anyway, skipping those that render diagrams: SHAPETRACE_ALLOW_NO_DOT=1 make test" >&2
  exit 1
fi
exit 0
