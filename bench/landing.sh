#!/usr/bin/env bash
# Benchmark (not a test) of the landing page and the health API.
#
#   bench/landing.sh                       # 10 s per route
#   BENCH_DURATION=30s bench/landing.sh    # longer runs
#
# It builds the release binary, measures start-to-ready (median of 5 cold
# starts on a fresh SQLite data dir), then runs wrk (64 connections,
# 2 threads) on loopback against:
#   /             with `Accept-Encoding: br` (what a browser asks for)
#   /             with no Accept-Encoding (identity)
#   /api/health
# and prints a table; the same figures go to bench/results/landing-<UTC>.json.
#
# Environment:
#   BENCH_DURATION     wrk duration per route (wrk syntax: 10s, 1m; default 10s)
#   BENCH_CONNECTIONS  wrk connections (default 64)
#   BENCH_THREADS      wrk threads (default 2)
#   BENCH_STARTS       cold starts for start-to-ready (default 5)
#
# Traffic goes to 127.0.0.1 only. Any HUNTAZE_* variable of the caller's
# environment is ignored so runs are comparable; a huntaze.toml is not read.
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=landing
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
STARTS="${BENCH_STARTS:-5}"
positive_int BENCH_CONNECTIONS "$CONNECTIONS"
positive_int BENCH_THREADS "$THREADS"
positive_int BENCH_STARTS "$STARTS"
DURATION_S="$(duration_secs "$DURATION")"

bench_init
need_pkg wrk wrk
need_pkg jq jq
need_cmd curl
[[ -r /proc/self/status ]] || die "/proc is needed to read the server's peak RSS"
build_release
bench_lock

# ---------------------------------------------------------------- start-to-ready --
log "start-to-ready: $STARTS cold starts on a fresh SQLite data dir"
READY_MS=()
for i in $(seq 1 "$STARTS"); do
    dir="$(mktemp -d "$WORK/start.XXXXXX")"
    port="$(free_port)"
    t0=$(date +%s%N)
    start_huntaze "$dir" "$port"
    wait_ready "http://127.0.0.1:$port/readyz" "$SERVER_PID" "$dir/server.log" "the server"
    t1=$(date +%s%N)
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b-a)/1e6}')
    READY_MS+=("$ms")
    log "  start $i: ${ms} ms"
    stop_server
    rm -rf "$dir"
done
READY_MEDIAN_MS="$(printf '%s\n' "${READY_MS[@]}" | median)"

# ---------------------------------------------------------------- load --
wrk_lua "$WORK/report.lua"

DATA="$(mktemp -d "$WORK/load.XXXXXX")"
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
log "starting the server for the load runs on $BASE"
start_huntaze "$DATA" "$PORT"
wait_ready "$BASE/readyz" "$SERVER_PID" "$DATA/server.log" "the server"

# name|path|Accept-Encoding (empty: header not sent)
ROUTES=(
    "landing-br|/|br"
    "landing-identity|/|"
    "api-health|/api/health|"
)

RESULTS=()   # one BENCH_RESULT line per route, same order as ROUTES
ENCODINGS=() # Content-Encoding the server answered (checked once with curl)
for r in "${ROUTES[@]}"; do
    IFS='|' read -r name path enc <<<"$r"
    hdr=()
    [[ -n "$enc" ]] && hdr=(-H "Accept-Encoding: $enc")
    ce="$(curl -s -o /dev/null -D - --max-time 5 "${hdr[@]}" "$BASE$path" \
        | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')"
    ENCODINGS+=("${ce:-identity}")
    log "wrk $name: GET $path${enc:+ (Accept-Encoding: $enc)} for $DURATION, -c$CONNECTIONS -t$THREADS [answered: ${ce:-identity}]"
    out="$WORK/wrk-$name.txt"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" \
        "${hdr[@]}" "$BASE$path" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed for $name"; }
    RESULTS+=("$(wrk_result "$out" "$name")")
done

kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the load runs"
PEAK_RSS_KB="$(peak_rss_kb "$SERVER_PID")"
stop_server
bench_unlock

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"
PEAK_RSS_MB="$(kb_to_mb "$PEAK_RSS_KB")"

echo
printf 'Huntaze landing benchmark  commit %s%s  nproc %s  wrk -t%s -c%s -d%s (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$THREADS" "$CONNECTIONS" "$DURATION"
printf '%-18s %-9s %12s %9s %9s %9s %9s %10s\n' route encoding "req/s" "p50 ms" "p99 ms" "non-2xx" "sock err" "B/resp"
ROUTES_JSON=""
for idx in "${!ROUTES[@]}"; do
    IFS='|' read -r name path enc <<<"${ROUTES[$idx]}"
    line="${RESULTS[$idx]}"
    requests=$(field requests "$line"); rps=$(field rps "$line"); bytes=$(field bytes "$line")
    p50=$(field p50_us "$line"); p90=$(field p90_us "$line"); p99=$(field p99_us "$line"); max=$(field max_us "$line")
    non2xx=$(field non2xx "$line"); status_err=$(field status_errors "$line")
    sock=$(socket_errors "$line")
    bpr=$(awk -v b="$bytes" -v n="$requests" 'BEGIN {printf "%d", (n>0)? b/n : 0}')
    p50ms=$(us_to_ms "$p50"); p90ms=$(us_to_ms "$p90"); p99ms=$(us_to_ms "$p99"); maxms=$(us_to_ms "$max")
    printf '%-18s %-9s %12s %9s %9s %9s %9s %10s\n' "$name" "${ENCODINGS[$idx]}" "$rps" "$p50ms" "$p99ms" "$non2xx" "$sock" "$bpr"
    [[ -n "$ROUTES_JSON" ]] && ROUTES_JSON+=","
    ROUTES_JSON+=$(printf '\n    {"name": "%s", "path": "%s", "accept_encoding": %s, "content_encoding": "%s", "requests": %s, "rps": %s, "p50_ms": %s, "p90_ms": %s, "p99_ms": %s, "max_ms": %s, "non_2xx": %s, "status_errors": %s, "socket_errors": %s, "bytes_per_response": %s}' \
        "$name" "$path" "$([[ -n $enc ]] && echo "\"$enc\"" || echo null)" "${ENCODINGS[$idx]}" \
        "$requests" "$rps" "$p50ms" "$p90ms" "$p99ms" "$maxms" "$non2xx" "$status_err" "$sock" "$bpr")
done
printf 'start-to-ready (median of %s): %s ms   [%s]\n' "$STARTS" "$READY_MEDIAN_MS" "${READY_MS[*]}"
printf 'peak RSS during load runs (VmHWM): %s MB (%s kB)\n' "$PEAK_RSS_MB" "$PEAK_RSS_KB"

cat >"$WORK/result.json" <<JSON
{
  "benchmark": "landing",
  "timestamp": "$NOW",
  "nproc": $NPROC,
  "wrk": {"version": "$WRK_VERSION", "threads": $THREADS, "connections": $CONNECTIONS, "duration": "$DURATION"},
  "server": {"profile": "release", "rust_log": "warn", "database": "sqlite", "max_in_flight": "default"},
  "start_to_ready_ms": {"median": $READY_MEDIAN_MS, "runs": [$(IFS=,; echo "${READY_MS[*]}")]},
  "peak_rss_kb": $PEAK_RSS_KB,
  "routes": [$ROUTES_JSON
  ]
}
JSON
write_result landing "$WORK/result.json"
