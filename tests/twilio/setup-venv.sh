#!/usr/bin/env bash
# Creates (or reuses) the venv with the Twilio Media Streams simulator `streamdouble` that
# server/tests/twilio_streamdouble.rs drives: target/twilio-venv (pinned in requirements.txt).
# Reused while its installed requirements match the pinned file. Prints the venv's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/twilio-venv
req=tests/twilio/requirements.txt

if ! [ -x "$venv/bin/streamdouble" ] || ! cmp -s "$req" "$venv/.requirements.txt"; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    bash scripts/setup.sh python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements.txt"
fi
"$venv/bin/streamdouble" --version >&2
echo "$venv"
