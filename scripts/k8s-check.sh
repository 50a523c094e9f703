#!/usr/bin/env bash
# Checks k8s/ offline: every overlay renders (`kubectl kustomize`), validates against the
# Kubernetes 1.32 schemas (PyPI kubernetes-validate, strict: unknown fields refused), and keeps
# the policies in scripts/k8s_policy.py; no secret value is committed under k8s/ or in the
# manifests' kustomization; the alert rules pass `promtool check rules` and `promtool test rules`;
# every metric the rules and the dashboards name is one a service exports, and a panel in bytes
# plots bytes. Installs kubernetes-validate into a venv of its own when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "k8s-check: needs kubectl (1.27 or later, for kustomize v5)" >&2; exit 1; }
VENV="${PITGUN_K8S_VENV:-$HOME/.cache/pitgun/k8s-venv}"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "kubernetes-validate==1.37.0" "PyYAML==6.0.4"
fi
OUT="$(mktemp -d /tmp/pitgun-k8s.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
if grep -rniE '(^|[^a-z])(password|passwd|api[_-]?key|token)"?[[:space:]]*[:=][[:space:]]*[^[:space:]{]|://[^/[:space:]]*:[^@[:space:]]*@' \
    k8s manifests/kustomization.yaml; then
  echo "k8s-check: a secret value in the tree (above); Secrets are made in the cluster" >&2
  exit 1
fi
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$OUT/$name.yaml"
  "$VENV/bin/kubernetes-validate" --strict --kubernetes-version 1.32.0 --quiet --no-warn "$OUT/$name.yaml"
  "$VENV/bin/python" scripts/k8s_policy.py "$OUT/$name.yaml" .
  echo "k8s-check: $name: $(grep -c '^kind:' "$OUT/$name.yaml") objects rendered, valid, policies kept"
done
# The alert rules: valid, and each tested alert fires on what should page and not before.
command -v promtool >/dev/null || { echo "k8s-check: needs promtool (Debian: apt-get install prometheus; scripts/stack.sh install does)" >&2; exit 1; }
promtool check rules k8s/monitoring/pitgun-alerts.rules.yaml
promtool test rules k8s/monitoring/pitgun-alerts.test.yaml
python3 -c 'import json, sys; [json.load(open(f)) for f in sys.argv[1:]]' k8s/monitoring/dashboards/*.json
python3 scripts/metric_names.py k8s/monitoring/pitgun-alerts.rules.yaml k8s/monitoring/dashboards/*.json
python3 scripts/panel_units.py k8s/monitoring/dashboards/*.json
# Each policy refuses a copy of an overlay that breaks it.
"$VENV/bin/python" scripts/k8s_policy.py --self-test "$OUT/prod.yaml" .
echo "k8s-check: every policy refuses a copy that breaks it"
