#!/usr/bin/env bash
# Checks deploy/ offline (issue 19): the Kubernetes manifests against the Kubernetes OpenAPI
# schemas (PyPI kubernetes-validate, pinned, in its own venv target/k8s-venv; strict: unknown
# fields fail), and the HAProxy and Kamailio configs with their own checkers (`haproxy -c`,
# `kamailio -c`). The node config inside the manifests and the dashboard's metric names are
# checked by server/tests/deploy_files.rs; the configs run for real in scripts/cluster-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/k8s-venv
pin="kubernetes-validate==1.37.0"
if ! [ -x "$venv/bin/kubernetes-validate" ] || [ "$pin" != "$(cat "$venv/.pin" 2>/dev/null)" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" 2>/dev/null || { bash scripts/setup.sh python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pin"
  printf '%s' "$pin" > "$venv/.pin"
fi
# The oldest Kubernetes minor still in common use that has every API used here.
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 deploy/k8s/*.yaml
echo "check-deploy: deploy/k8s/*.yaml valid (Kubernetes 1.30 schemas, strict)"

haproxy -c -q -f deploy/haproxy/haproxy.cfg
echo "check-deploy: deploy/haproxy/haproxy.cfg valid"
kamailio -c -f deploy/kamailio/kamailio.cfg \
  -A "DISPATCHER_LIST=\"$(pwd)/deploy/kamailio/dispatcher.list\"" >/dev/null 2>&1 ||
  { kamailio -c -f deploy/kamailio/kamailio.cfg -A "DISPATCHER_LIST=\"$(pwd)/deploy/kamailio/dispatcher.list\"" 2>&1 | tail -20; exit 1; }
echo "check-deploy: deploy/kamailio/kamailio.cfg valid"
