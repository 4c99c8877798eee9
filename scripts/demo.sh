#!/usr/bin/env bash
# The run command: set-up, the default (`cpu`) model set, a release build, then the server.
set -euo pipefail
cd "$(dirname "$0")/.."
# `source` would hand this script's arguments (`--port 9000`) to setup.sh as package names.
serve_args=("$@")
set --
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --bin antiphon
./target/release/antiphon models fetch --set cpu
exec ./target/release/antiphon serve "${serve_args[@]}"
