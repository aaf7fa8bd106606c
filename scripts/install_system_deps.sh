#!/usr/bin/env bash
# Headless MuJoCo rendering needs OSMesa (Debian: libosmesa6). Installed only when missing and when we can.
set -u
if ldconfig -p 2>/dev/null | grep -q libOSMesa; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  $SUDO apt-get install -y -qq libosmesa6 >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq libosmesa6 >/dev/null 2>&1; }
fi
ldconfig -p 2>/dev/null | grep -q libOSMesa
