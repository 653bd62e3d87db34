#!/usr/bin/env bash
# Validates every file under deploy/ with the tools at hand, each step
# skipped (and said so) when its tool is missing:
#   promtool (Debian: prometheus), nginx and openssl, python3 with PyYAML,
#   kubernetes-validate (PyPI), systemd-analyze.
# Run from anywhere: bash deploy/check.sh
set -uo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
step() { printf '\n== %s\n' "$1"; }
run() { if "$@"; then echo "ok"; else echo "FAILED: $*"; failed=1; fi; }

step "Prometheus rules and their unit tests"
if command -v promtool >/dev/null; then
    run promtool check rules prometheus/alerts.yml
    run promtool test rules prometheus/alerts_test.yml
    run promtool test rules prometheus/slo_test.yml
    # The configuration names a token file that exists only on the Prometheus
    # host: check a copy that points at a stand-in. Debian's promtool is built
    # without Kubernetes service discovery; then the Kubernetes job is left out
    # of the copy (and said so).
    echo "stand-in" > "$tmp/token"
    sed -e "s#/etc/prometheus/secrets/huntaze-monitoring-token#$tmp/token#" \
        -e "s#^  - alerts.yml#  - $PWD/prometheus/alerts.yml#" \
        prometheus/prometheus.yml > "$tmp/prometheus.yml"
    if ! promtool check config "$tmp/prometheus.yml" >"$tmp/out" 2>&1 \
        && grep -q "field kubernetes_sd_configs not found" "$tmp/out"; then
        echo "this promtool has no Kubernetes service discovery: checking without the huntaze-kubernetes job"
        python3 -c '
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["scrape_configs"] = [s for s in c["scrape_configs"] if "kubernetes_sd_configs" not in s]
yaml.safe_dump(c, open(sys.argv[1], "w"))' "$tmp/prometheus.yml"
    fi
    run promtool check config "$tmp/prometheus.yml"
else
    echo "skipped: no promtool (apt-get install prometheus)"
fi

step "YAML (Kubernetes manifests, Prometheus files)"
if python3 -c 'import yaml' 2>/dev/null; then
    for f in k8s/*.yaml prometheus/*.yml; do
        run python3 -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$f"
    done
else
    echo "skipped: no python3 with PyYAML"
fi

step "Kubernetes schemas"
if command -v kubernetes-validate >/dev/null; then
    run kubernetes-validate --strict --quiet k8s/*.yaml
else
    echo "skipped: no kubernetes-validate (pip install kubernetes-validate)"
fi

step "Grafana dashboard JSON"
run python3 -c 'import json, sys; json.load(open(sys.argv[1]))' grafana/huntaze-dashboard.json

step "nginx configuration"
if command -v nginx >/dev/null && command -v openssl >/dev/null; then
    # Wrap the file in an http {} block, with a throw-away certificate in
    # place of the real one.
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=huntaze.example.com \
        -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
    sed -e "s#/etc/nginx/tls/huntaze.example.com/fullchain.pem#$tmp/cert.pem#" \
        -e "s#/etc/nginx/tls/huntaze.example.com/privkey.pem#$tmp/key.pem#" \
        -e "s#/var/log/nginx/huntaze.access.log#$tmp/access.log#" \
        nginx/huntaze.conf > "$tmp/huntaze.conf"
    cat > "$tmp/nginx.conf" <<CONF
pid $tmp/nginx.pid;
error_log stderr;
events {}
http {
    include $tmp/huntaze.conf;
}
CONF
    run nginx -t -p "$tmp" -c "$tmp/nginx.conf"
else
    echo "skipped: no nginx or openssl (apt-get install nginx)"
fi

step "systemd unit"
if command -v systemd-analyze >/dev/null; then
    # The binary is not installed here: verify a copy that runs /bin/true.
    sed -e 's#/usr/local/bin/huntaze#/bin/true#g' systemd/huntaze.service > "$tmp/huntaze.service"
    run systemd-analyze verify "$tmp/huntaze.service"
else
    echo "skipped: no systemd-analyze"
fi

echo
if [ "$failed" = 0 ]; then echo "deploy/: all checks passed"; else echo "deploy/: some checks FAILED"; fi
exit "$failed"
