#!/usr/bin/env bash
# Benchmark (not a test): `/` over HTTPS, huntaze against nginx, side by
# side on loopback, with the same page bytes and the same certificate.
#
#   bench/tls.sh                                     # 3 rounds x 10 s
#   BENCH_DURATION=5s BENCH_ROUNDS=3 bench/tls.sh    # quicker
#
# A throw-away CA and an ECDSA P-256 server certificate (openssl) serve both
# targets:
#   huntaze  the release binary with HUNTAZE_TLS_CERT_FILE/_KEY_FILE (rustls,
#            aws-lc-rs; full middleware stack, fresh SQLite data dir);
#   nginx    Debian's nginx with `ssl` + `http2` on one port, serving the
#            gzip page fetched from huntaze with huntaze's response headers
#            (bench/nginx/tls.conf.in), one worker per core.
# Per round, for each target in turn:
#   h1       wrk -t$THREADS -c$CONNECTIONS, HTTP/1.1 keep-alive over TLS
#   h2       h2load -c$H2_CLIENTS -m$H2_STREAMS (HTTP/2 by ALPN; 64 streams
#            over 4 connections by default)
#   handshake wrk with `Connection: close` (-c$HS_CONNECTIONS): every
#            request opens a TCP connection and a full TLS handshake, so its
#            req/s is new TLS connections per second
# Reported: median req/s of each, the ratios huntaze/nginx (targets: h1 and
# h2 >= 1.0; handshakes reported), p99 of the wrk runs, and peak RSS
# (VmHWM; nginx: master + workers summed). JSON in bench/results/tls-<UTC>.json.
#
# Environment:
#   BENCH_DURATION        duration per run (10s, 1m; default 10s)
#   BENCH_ROUNDS          interleaved rounds (default 3)
#   BENCH_CONNECTIONS     wrk keep-alive connections (default 64)
#   BENCH_THREADS         wrk / h2load threads (default 2)
#   BENCH_H2_CLIENTS / BENCH_H2_STREAMS   h2load -c / -m (default 4 / 16)
#   BENCH_HS_CONNECTIONS  wrk connections of the handshake run (default 32)
# and the settings every script reads: bench/README.md.
set -euo pipefail
BENCH_NAME=tls
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
H2_CLIENTS="${BENCH_H2_CLIENTS:-4}"
H2_STREAMS="${BENCH_H2_STREAMS:-16}"
HS_CONNECTIONS="${BENCH_HS_CONNECTIONS:-32}"
for v in ROUNDS CONNECTIONS THREADS H2_CLIENTS H2_STREAMS HS_CONNECTIONS; do positive_int "BENCH_$v" "${!v}"; done
DURATION_S="$(duration_secs "$DURATION")"

bench_init
need_pkg wrk wrk
need_pkg jq jq
need_pkg h2load nghttp2-client
need_pkg openssl openssl
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_pkg nginx nginx
NGINX="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
need_cmd curl
build_release

NGX=""
NGX_PID=""
HZ_PID=""
on_exit() {
    stop_pid "$HZ_PID"
    stop_pid "$NGX_PID"
    [[ -n "$NGX" ]] && rm -rf "$NGX"
}

# ---------------------------------------------------------------- certificate --
CERTS="$WORK/certs"
mkdir -p "$CERTS"
(
    cd "$CERTS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj "/CN=huntaze bench CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem
    openssl req -new -key key.pem -out leaf.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out leaf.pem
    cat leaf.pem ca.pem >cert.pem
) >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl could not make the certificate"; }
# curl (readiness probes, page fetches) trusts the throw-away CA.
export CURL_CA_BUNDLE="$CERTS/ca.pem"

bench_lock

# ---------------------------------------------------------------- huntaze --
HZ_DIR="$(mktemp -d "$WORK/huntaze.XXXXXX")"
HZ_PORT="$(free_port)"
start_huntaze "$HZ_DIR" "$HZ_PORT" \
    HUNTAZE_PUBLIC_URL="https://127.0.0.1:$HZ_PORT" \
    HUNTAZE_TLS_CERT_FILE="$CERTS/cert.pem" HUNTAZE_TLS_KEY_FILE="$CERTS/key.pem"
HZ_PID="$SERVER_PID"; SERVER_PID=""
wait_ready "https://127.0.0.1:$HZ_PORT/readyz" "$HZ_PID" "$HZ_DIR/server.log" "huntaze"
log "huntaze on https://127.0.0.1:$HZ_PORT (pid $HZ_PID)"

PAGE="$WORK/page"
fetch_page "https://127.0.0.1:$HZ_PORT" "$PAGE"

# ---------------------------------------------------------------- nginx --
NGX="$(mktemp -d -t huntaze-tls-nginx.XXXXXX)"
chmod 755 "$NGX"
mkdir -p "$NGX/html" "$NGX/tmp"
cp "$PAGE/index.html" "$PAGE/index.html.gz" "$NGX/html/"
touch -r "$NGX/html/index.html" "$NGX/html/index.html.gz"
cp "$CERTS/cert.pem" "$CERTS/key.pem" "$NGX/"
chmod 755 "$NGX/html"; chmod 644 "$NGX/html/"* "$NGX/cert.pem" "$NGX/key.pem"
nginx_headers_conf "$PAGE/gz.headers" "$NGX/headers.conf"
NPROC="$(nproc)"
NGX_PORT="$(free_port "$HZ_PORT")"
sed -e "s|@WORKERS@|$NPROC|g" -e "s|@PORT@|$NGX_PORT|g" -e "s|@PREFIX@|$NGX|g" \
    -e "s|@CACHE_CONTROL@|$CACHE_CONTROL|g" "$ROOT/bench/nginx/tls.conf.in" >"$NGX/nginx.conf"
"$NGINX" -t -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$NGX/test.log" 2>&1 \
    || { cat "$NGX/test.log" >&2; die "nginx rejected bench/nginx/tls.conf.in"; }
"$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$NGX/stdout.log" 2>&1 9>&- &
NGX_PID=$!
wait_ready "https://127.0.0.1:$NGX_PORT/" "$NGX_PID" "$NGX/error.log" "nginx"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')"
log "nginx $NGINX_VERSION on https://127.0.0.1:$NGX_PORT (master $NGX_PID, $NPROC workers)"

# Both serve the same bytes, over h2 and over http/1.1, by ALPN.
for target in "huntaze|$HZ_PORT" "nginx|$NGX_PORT"; do
    IFS='|' read -r name port <<<"$target"
    for proto in --http1.1 --http2; do
        meta="$(curl -s --max-time 5 "$proto" -H 'Accept-Encoding: gzip' -o "$WORK/check.body" \
            -w '%{http_code} %{http_version}' "https://127.0.0.1:$port/")" || die "cannot reach $name ($proto)"
        sha="$(sha256sum "$WORK/check.body" | cut -c1-16)"
        [[ "$meta" == "200 1.1" || "$meta" == "200 2" ]] || die "$name answered '$meta' to $proto"
        [[ "$sha" == "$GZIP_SHA" ]] || die "$name does not serve the same gzip bytes over $proto"
        log "  $name $proto: $meta, same bytes"
    done
done

# ---------------------------------------------------------------- load --
wrk_lua "$WORK/report.lua"
RUNS="$WORK/runs.jsonl"
: >"$RUNS"

# wrk_tls ROUND TARGET KIND PORT CONNECTIONS [HEADER]: one wrk run.
wrk_tls() {
    local round="$1" target="$2" kind="$3" port="$4" conns="$5" extra="${6:-}" out line
    local hdr=(-H "Accept-Encoding: gzip")
    [[ -n "$extra" ]] && hdr+=(-H "$extra")
    out="$WORK/wrk-$target-$kind-$round.txt"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$conns" -d"$DURATION" -s "$WORK/report.lua" "${hdr[@]}" "https://127.0.0.1:$port/" \
        >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed for $target $kind"; }
    line="$(wrk_result "$out" "$target $kind")"
    jq -nc --arg target "$target" --arg kind "$kind" --argjson round "$round" \
        --argjson rps "$(field rps "$line")" --argjson p99 "$(field p99_us "$line")" \
        --argjson non2xx "$(field non2xx "$line")" --argjson errors "$(socket_errors "$line")" \
        '{target: $target, kind: $kind, round: $round, rps: $rps, p99_ms: ($p99 / 1000),
          non_2xx: $non2xx, socket_errors: $errors}' >>"$RUNS"
    log "  $target $kind round $round: $(field rps "$line") req/s, p99 $(us_to_ms "$(field p99_us "$line")") ms, non-2xx $(field non2xx "$line"), socket errors $(socket_errors "$line")"
}

# h2load_tls ROUND TARGET PORT: one h2load run (HTTP/2 by ALPN).
h2load_tls() {
    local round="$1" target="$2" port="$3" out rps ok failed proto
    out="$WORK/h2load-$target-$round.txt"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        h2load -t"$THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$DURATION_S" \
        -H 'Accept-Encoding: gzip' "https://127.0.0.1:$port/" >"$out" 2>&1 \
        || { cat "$out" >&2; die "h2load failed for $target"; }
    proto="$(awk -F': ' '/^Application protocol:/ {print $2}' "$out")"
    [[ "$proto" == h2 ]] || { cat "$out" >&2; die "h2load did not negotiate h2 with $target"; }
    rps="$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")"
    ok="$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$out")"
    failed="$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored.*/\1/p' "$out")"
    [[ -n "$rps" && -n "$ok" ]] || { cat "$out" >&2; die "cannot read h2load's summary for $target"; }
    jq -nc --arg target "$target" --argjson round "$round" --argjson rps "$rps" \
        --argjson ok "$ok" --argjson failed "${failed:-0}" \
        '{target: $target, kind: "h2", round: $round, rps: $rps, ok_2xx: $ok, failed: $failed}' >>"$RUNS"
    log "  $target h2 round $round: $rps req/s, 2xx $ok, failed ${failed:-0}"
}

for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS"
    for target in "huntaze|$HZ_PORT" "nginx|$NGX_PORT"; do
        IFS='|' read -r name port <<<"$target"
        wrk_tls "$round" "$name" h1 "$port" "$CONNECTIONS"
        h2load_tls "$round" "$name" "$port"
        wrk_tls "$round" "$name" handshake "$port" "$HS_CONNECTIONS" "Connection: close"
    done
done

kill -0 "$HZ_PID" 2>/dev/null || die "huntaze died during the load runs"
kill -0 "$NGX_PID" 2>/dev/null || die "nginx died during the load runs"
HZ_RSS_KB="$(peak_rss_kb "$HZ_PID")"
NGX_RSS_KB=0
for p in "$NGX_PID" $(pgrep -P "$NGX_PID" 2>/dev/null || true); do
    NGX_RSS_KB=$(( NGX_RSS_KB + $(peak_rss_kb "$p" || echo 0) ))
done
server_errors "$HZ_DIR/server.log" huntaze
stop_pid "$HZ_PID"; HZ_PID=""
stop_pid "$NGX_PID"; NGX_PID=""
bench_unlock

# ---------------------------------------------------------------- report --
OUT="$WORK/result.json"
jq -s --arg now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson nproc "$NPROC" --arg nginx "$NGINX_VERSION" \
    --arg duration "$DURATION" --argjson rounds "$ROUNDS" --argjson conns "$CONNECTIONS" \
    --argjson threads "$THREADS" --argjson h2c "$H2_CLIENTS" --argjson h2m "$H2_STREAMS" \
    --argjson hsc "$HS_CONNECTIONS" --argjson hz_rss "$HZ_RSS_KB" --argjson ngx_rss "$NGX_RSS_KB" '
    def median: sort | if length == 0 then null
        elif length % 2 == 1 then .[length / 2 | floor]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r2: if . == null then null else (. * 100 | round) / 100 end;
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else ($a / $b * 1000 | round) / 1000 end;
    . as $runs
    | def agg($t; $k): ($runs | map(select(.target == $t and .kind == $k))) as $r
        | {rps_median: ($r | map(.rps) | median | r2),
           p99_ms_median: ($r | map(.p99_ms // empty) | median | r2),
           non_2xx: ($r | map(.non_2xx // 0) | add), socket_errors: ($r | map(.socket_errors // 0) | add),
           failed: ($r | map(.failed // 0) | add), rounds: ($r | map(del(.target, .kind)))};
    {benchmark: "tls", timestamp: $now, nproc: $nproc, nginx_version: $nginx,
     duration: $duration, rounds: $rounds,
     load: {h1: "wrk -t\($threads) -c\($conns) (keep-alive)", h2: "h2load -t\($threads) -c\($h2c) -m\($h2m)",
            handshake: "wrk -t\($threads) -c\($hsc) -H \"Connection: close\""},
     certificate: "ECDSA P-256, chain of 2",
     huntaze: {h1: agg("huntaze"; "h1"), h2: agg("huntaze"; "h2"), handshake: agg("huntaze"; "handshake"), peak_rss_kb: $hz_rss},
     nginx: {h1: agg("nginx"; "h1"), h2: agg("nginx"; "h2"), handshake: agg("nginx"; "handshake"), peak_rss_kb: $ngx_rss}}
    | .ratios = {h1: ratio(.huntaze.h1.rps_median; .nginx.h1.rps_median),
                 h2: ratio(.huntaze.h2.rps_median; .nginx.h2.rps_median),
                 handshake: ratio(.huntaze.handshake.rps_median; .nginx.handshake.rps_median),
                 peak_rss: ratio($hz_rss; $ngx_rss)}
    | .targets = {h1: {target: 1.0, met: (.ratios.h1 != null and .ratios.h1 >= 1.0)},
                  h2: {target: 1.0, met: (.ratios.h2 != null and .ratios.h2 >= 1.0)}}' \
    "$RUNS" >"$OUT" || die "cannot assemble the result"

echo
printf 'Huntaze HTTPS benchmark  commit %s%s  nproc %s  %s x %s rounds (loopback, ECDSA P-256)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$DURATION" "$ROUNDS"
printf '%-10s %14s %14s %8s %s\n' run "huntaze req/s" "nginx req/s" ratio target
for k in h1 h2 handshake; do
    jq -r --arg k "$k" '[$k, .huntaze[$k].rps_median, .nginx[$k].rps_median, .ratios[$k],
        (if .targets[$k] then (if .targets[$k].met then ">= 1.0 ok" else ">= 1.0 MISSED" end) else "reported" end)]
        | @tsv' "$OUT" | awk -F'\t' '{printf "%-10s %14s %14s %8s %s\n", $1, $2, $3, $4, $5}'
done
jq -r '"peak RSS   huntaze \(.huntaze.peak_rss_kb / 1024 | . * 10 | round / 10) MB, nginx (master + workers) \(.nginx.peak_rss_kb / 1024 | . * 10 | round / 10) MB"' "$OUT"
write_result tls "$OUT"
