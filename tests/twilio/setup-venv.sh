#!/usr/bin/env bash
# Creates (or reuses) the venv with the Twilio Media Streams simulator `streamdouble` that
# server/tests/twilio_streamdouble.rs drives and Twilio's own request signer for
# server/tests/twilio_protocol.rs: target/twilio-venv (pinned in requirements.txt and, installed
# without dependencies, requirements-nodeps.txt). Reused while its installed requirements match
# the pinned files. Prints the venv's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/twilio-venv
req=tests/twilio/requirements.txt
nodeps=tests/twilio/requirements-nodeps.txt
pinned=$(cat "$req" "$nodeps")

if ! [ -x "$venv/bin/streamdouble" ] || [ "$pinned" != "$(cat "$venv/.requirements.txt" 2>/dev/null)" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    bash scripts/setup.sh python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$nodeps"
  printf '%s' "$pinned" > "$venv/.requirements.txt"
fi
"$venv/bin/streamdouble" --version >&2
echo "$venv"
