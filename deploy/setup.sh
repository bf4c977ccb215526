#!/usr/bin/env bash
# Installs what kinitro needs on a Debian machine that has Rust, idempotently and quickly when
# everything is already there:
#   - Debian packages: PostgreSQL server, python3 + pip (only to download wheels), the Mesa EGL
#     runtime for headless rendering, libpq-dev, and the tools the deployment checks use (docker-compose
#     to validate the compose files, nginx to check its configuration, openssl, wrk for the load bench,
#     prometheus to check that /metrics is scrapeable, systemd for systemd-analyze on the units, socat
#     and docker-registry for the container tests: a second tcp:// Docker host and a registry on
#     loopback to push to; chromium for the dashboard's page tests in a headless browser);
#   - the MuJoCo 3.17.0 C library out of the PyPI wheel mujoco==3.17.0, into third_party/mujoco/;
#   - MetaWorld's scene files out of the PyPI wheel metaworld==3.1.1, into the assets directory
#     ($KINITRO_METAWORLD_ASSETS_DIR, default <data dir>/metaworld/assets);
#   - a Python virtual environment with FastAPI, uvicorn and pydantic (pinned) in
#     third_party/python-miner/, for the test that drives a FastAPI/pydantic miner
#     (tests/fixtures/fastapi_miner/miner.py).
# Nothing it fetches is committed (third_party/ is git-ignored). Spec: environments.md 2.
#
# Environment: KINITRO_SETUP_SKIP_APT=1 skips the Debian packages.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
third_party="$repo/third_party"
downloads="$third_party/downloads"

MUJOCO_WHEEL="mujoco-3.17.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
MUJOCO_SHA256="d66928d86a2d1b601bbaa4dc11db50214d17d5301bb8afd84721313b67ff0874"
METAWORLD_WHEEL="metaworld-3.1.1-py3-none-any.whl"
METAWORLD_SHA256="99e25d9baf97f2f1a19ca89c0d2ca9c6a2b396d9a9be81729de64eedc683f0d3"

log() { echo "setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) to run: $*"; exit 1; fi
}

# 1. Debian packages, only those missing.
packages=(postgresql python3 python3-pip python3-venv libpq-dev libegl1 libegl-mesa0 libgl1-mesa-dri ca-certificates
  docker-compose nginx openssl wrk curl prometheus systemd socat docker-registry chromium)
if [ "${KINITRO_SETUP_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # A PostgreSQL server found elsewhere (PATH) satisfies the server requirement.
  if command -v initdb >/dev/null && command -v postgres >/dev/null && command -v pg_isready >/dev/null; then
    missing=("${missing[@]/postgresql}")
  fi
  missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 2. Wheels (pip download; checked against pinned SHA-256).
fetch_wheel() { # file sha256 requirement [pip options...]
  local file="$1" sum="$2" req="$3"; shift 3
  mkdir -p "$downloads"
  if [ -f "$downloads/$file" ] && echo "$sum  $downloads/$file" | sha256sum -c --status; then return; fi
  log "downloading $req"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$downloads" "$@" "$req"
  echo "$sum  $downloads/$file" | sha256sum -c --status || { log "checksum mismatch for $file"; exit 1; }
}

lib="$third_party/mujoco/lib"
if [ ! -f "$lib/libmujoco.so.3.17.0" ] || [ ! -f "$third_party/mujoco/include/mujoco/mujoco.h" ]; then
  fetch_wheel "$MUJOCO_WHEEL" "$MUJOCO_SHA256" "mujoco==3.17.0" \
    --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64
  log "unpacking the MuJoCo library into $third_party/mujoco"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  python3 -m zipfile -e "$downloads/$MUJOCO_WHEEL" "$tmp"
  mkdir -p "$lib" "$third_party/mujoco/include"
  cp "$tmp/mujoco/libmujoco.so.3.17.0" "$lib/"
  ln -sf libmujoco.so.3.17.0 "$lib/libmujoco.so"
  rm -rf "$third_party/mujoco/include/mujoco" "$third_party/mujoco/plugin"
  cp -r "$tmp/mujoco/include/mujoco" "$third_party/mujoco/include/"
  if [ -d "$tmp/mujoco/plugin" ]; then cp -r "$tmp/mujoco/plugin" "$third_party/mujoco/"; fi
  rm -rf "$tmp"; trap - EXIT
fi

# The assets directory: the variable (made absolute), else the default data directory of config.md 2.5.
if [ -n "${KINITRO_METAWORLD_ASSETS_DIR:-}" ]; then
  assets="$(realpath -m "$KINITRO_METAWORLD_ASSETS_DIR")"
elif [ "$(id -u)" = 0 ]; then
  assets="/var/lib/kinitro/metaworld/assets"
else
  assets="${XDG_DATA_HOME:-$HOME/.local/share}/kinitro/metaworld/assets"
fi
if [ ! -f "$assets/.metaworld-3.1.1" ]; then
  fetch_wheel "$METAWORLD_WHEEL" "$METAWORLD_SHA256" "metaworld==3.1.1"
  log "installing the MetaWorld scene files into $assets"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  python3 -m zipfile -e "$downloads/$METAWORLD_WHEEL" "$tmp"
  mkdir -p "$assets"
  cp -r "$tmp/metaworld/assets/." "$assets/"
  licence="$(find "$tmp" -maxdepth 3 -type f -iname 'LICENSE*' | head -n 1)"
  if [ -n "$licence" ]; then cp "$licence" "$assets/LICENSE.metaworld"; fi
  # Readable by the unprivileged users the services may run as.
  chmod -R a+rX "$assets"
  touch "$assets/.metaworld-3.1.1"
  rm -rf "$tmp"; trap - EXIT
fi

# 3. The Python miner's environment (tests only).
python_miner="$third_party/python-miner"
PYTHON_MINER_REQS=("fastapi==0.115.6" "uvicorn==0.34.0" "pydantic==2.10.4" "numpy==2.2.6")
if [ ! -f "$python_miner/.ready-2" ]; then
  log "creating the FastAPI test miner's Python environment in $python_miner"
  rm -rf "$python_miner"
  python3 -m venv "$python_miner"
  "$python_miner/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_MINER_REQS[@]}"
  touch "$python_miner/.ready-2"
fi

log "ready: PostgreSQL server, MuJoCo library in $lib, MetaWorld assets in $assets, test miner in $python_miner"
