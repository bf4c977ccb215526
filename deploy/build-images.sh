#!/usr/bin/env bash
# Builds the images of the compose stacks on the local Docker engine with no registry
# (docs/deployment.md §1): kinitro:latest (the runtime: API, scheduler, executor, `kinitro run`) and
# kinitro/postgres:latest, both FROM scratch over roots assembled from this machine's files — the
# release binary built here, the libraries it and PostgreSQL load, Mesa's EGL, MuJoCo, MetaWorld's
# scene files and the host's PostgreSQL server (deploy/setup.sh installs what is needed).
#   deploy/build-images.sh                       # cargo build --release, then both images
#   KINITRO_BINARY=path/to/kinitro deploy/build-images.sh   # an already built binary
#   deploy/build-images.sh --runtime-tag kinitro:1.2 --no-cache   # options of `kinitro image build`
# With a registry, deploy/Dockerfile builds the runtime image from Debian's base images instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${KINITRO_BINARY:-}"
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release --locked)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/kinitro"
fi
# No secret may reach a layer: the images are assembled from named host files only (never the
# repository, so deploy/.env and deploy/database.env cannot be copied in).
exec "$binary" image build all --binary "$binary" "$@"
