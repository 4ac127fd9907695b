#!/usr/bin/env bash
# Installs what building cxr-search needs beyond the Rust toolchain: cmake, which builds CharLS
# (the JPEG-LS codec) from source. Safe to run again.
set -euo pipefail
if ! command -v cmake >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq cmake >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup)" >&2; exit 1; }
