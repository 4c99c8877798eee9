#!/usr/bin/env bash
# The test command: set-up (system packages, the `ci` model set) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# Models the tests load; verified by hash, downloads nothing when already present.
cargo run --quiet --bin antiphon -- models fetch --set ci

cargo test --workspace --no-fail-fast
