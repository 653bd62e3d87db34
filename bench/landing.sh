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
set -euo pipefail

DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
STARTS="${BENCH_STARTS:-5}"
READY_DEADLINE_S=60

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/huntaze"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# Ignore the caller's server configuration.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^HUNTAZE_' || true)

# ---------------------------------------------------------------- cleanup --
WORK="$(mktemp -d -t huntaze-bench.XXXXXX)"
SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools --
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    if ! as_root apt-get install -y wrk >"$WORK/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update first"
        as_root apt-get update >>"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
        as_root apt-get install -y wrk >>"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "cannot install wrk"; }
    fi
fi
command -v wrk >/dev/null || die "wrk is not installed"
command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
command -v curl >/dev/null || die "curl is not installed"
[[ -r /proc/self/status ]] || die "/proc is needed to read the server's peak RSS"

# ---------------------------------------------------------------- build --
log "cargo build --release"
cargo build --release >&2 || die "release build failed"
[[ -x "$BIN" ]] || die "no binary at $BIN"

# ---------------------------------------------------------------- helpers --
# Seconds of a wrk-style duration (10, 10s, 2m, 1h); used to bound wrk itself.
duration_secs() {
    local d="$1"
    case "$d" in
        *h) echo $(( ${d%h} * 3600 )) ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *s) echo $(( ${d%s} )) ;;
        *)  echo $(( d )) ;;
    esac
}
DURATION_S="$(duration_secs "$DURATION")" || die "BENCH_DURATION must look like 10s, 2m or 1h"
(( DURATION_S > 0 )) || die "BENCH_DURATION must be positive"

# A loopback port nobody listens on (connect is refused).
free_port() {
    local p
    for _ in $(seq 1 100); do
        # Below Linux's default ephemeral range (32768-60999): a port in use as
        # some client's source port passes the connect probe but cannot be bound.
        p=$(( 20000 + RANDOM % 12000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# start_server DATA_DIR PORT: starts the release binary in DATA_DIR (so no
# huntaze.toml is found), sets SERVER_PID.
start_server() {
    local dir="$1" port="$2"
    (
        cd "$dir"
        exec env HUNTAZE_LISTEN="127.0.0.1:$port" \
            HUNTAZE_PUBLIC_URL="http://127.0.0.1:$port" \
            HUNTAZE_DATA_DIR="$dir" \
            HUNTAZE_CONFIG="$ROOT/bench/empty.toml" \
            RUST_LOG=warn \
            "$BIN" serve
    ) >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
}

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" 2>/dev/null || true; }

# wait_ready PORT LOG: polls /readyz every 5 ms until 200 (bounded).
wait_ready() {
    local port="$1" logf="$2" deadline=$(( $(date +%s) + READY_DEADLINE_S ))
    while :; do
        [[ "$(http_code "http://127.0.0.1:$port/readyz")" == 200 ]] && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$logf" >&2 || true
            die "server exited before it was ready"
        fi
        if (( $(date +%s) >= deadline )); then
            tail -n 20 "$logf" >&2 || true
            die "server not ready after ${READY_DEADLINE_S}s"
        fi
        sleep 0.005
    done
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) exit 1; if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# ---------------------------------------------------------------- start-to-ready --
log "start-to-ready: $STARTS cold starts on a fresh SQLite data dir"
READY_MS=()
for i in $(seq 1 "$STARTS"); do
    dir="$(mktemp -d "$WORK/start.XXXXXX")"
    port="$(free_port)" || die "no free port"
    t0=$(date +%s%N)
    start_server "$dir" "$port"
    wait_ready "$port" "$dir/server.log"
    t1=$(date +%s%N)
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b-a)/1e6}')
    READY_MS+=("$ms")
    log "  start $i: ${ms} ms"
    stop_server
    rm -rf "$dir"
done
READY_MEDIAN_MS="$(printf '%s\n' "${READY_MS[@]}" | median)"

# ---------------------------------------------------------------- load --
cat >"$WORK/report.lua" <<'LUA'
-- Counts non-2xx answers per thread and prints one machine-readable line.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non2xx = 0
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
    end
end

function done(summary, latency, requests)
    local n = 0
    for _, t in ipairs(threads) do
        n = n + (t:get("non2xx") or 0)
    end
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
        summary.requests, secs, summary.requests / secs, summary.bytes,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        n, e.status, e.connect, e.read, e.write, e.timeout))
end
LUA

DATA="$(mktemp -d "$WORK/load.XXXXXX")"
PORT="$(free_port)" || die "no free port"
BASE="http://127.0.0.1:$PORT"
log "starting the server for the load runs on $BASE"
start_server "$DATA" "$PORT"
wait_ready "$PORT" "$DATA/server.log"

# name|path|Accept-Encoding (empty: header not sent)
ROUTES=(
    "landing-br|/|br"
    "landing-identity|/|"
    "api-health|/api/health|"
)

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

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
    line="$(grep '^BENCH_RESULT ' "$out" | tail -n 1)"
    [[ -n "$line" ]] || { cat "$out" >&2; die "no result line from wrk for $name"; }
    RESULTS+=("$line")
done

kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the load runs"
PEAK_RSS_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
stop_server

# ---------------------------------------------------------------- report --
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]] && DIRTY=true
NPROC="$(nproc)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"
PEAK_RSS_MB="$(awk -v k="$PEAK_RSS_KB" 'BEGIN {printf "%.1f", k/1024}')"

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
    sock=$(( $(field connect_errors "$line") + $(field read_errors "$line") + $(field write_errors "$line") + $(field timeouts "$line") ))
    bpr=$(awk -v b="$bytes" -v n="$requests" 'BEGIN {printf "%d", (n>0)? b/n : 0}')
    p50ms=$(awk -v u="$p50" 'BEGIN {printf "%.2f", u/1000}')
    p90ms=$(awk -v u="$p90" 'BEGIN {printf "%.2f", u/1000}')
    p99ms=$(awk -v u="$p99" 'BEGIN {printf "%.2f", u/1000}')
    maxms=$(awk -v u="$max" 'BEGIN {printf "%.2f", u/1000}')
    printf '%-18s %-9s %12s %9s %9s %9s %9s %10s\n' "$name" "${ENCODINGS[$idx]}" "$rps" "$p50ms" "$p99ms" "$non2xx" "$sock" "$bpr"
    [[ -n "$ROUTES_JSON" ]] && ROUTES_JSON+=","
    ROUTES_JSON+=$(printf '\n    {"name": "%s", "path": "%s", "accept_encoding": %s, "content_encoding": "%s", "requests": %s, "rps": %s, "p50_ms": %s, "p90_ms": %s, "p99_ms": %s, "max_ms": %s, "non_2xx": %s, "status_errors": %s, "socket_errors": %s, "bytes_per_response": %s}' \
        "$name" "$path" "$([[ -n $enc ]] && echo "\"$enc\"" || echo null)" "${ENCODINGS[$idx]}" \
        "$requests" "$rps" "$p50ms" "$p90ms" "$p99ms" "$maxms" "$non2xx" "$status_err" "$sock" "$bpr")
done
printf 'start-to-ready (median of %s): %s ms   [%s]\n' "$STARTS" "$READY_MEDIAN_MS" "${READY_MS[*]}"
printf 'peak RSS during load runs (VmHWM): %s MB (%s kB)\n' "$PEAK_RSS_MB" "$PEAK_RSS_KB"

mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/landing-$STAMP.json"
cat >"$OUT.tmp" <<JSON
{
  "benchmark": "landing",
  "timestamp": "$NOW",
  "commit": "$COMMIT",
  "dirty": $DIRTY,
  "nproc": $NPROC,
  "wrk": {"version": "$WRK_VERSION", "threads": $THREADS, "connections": $CONNECTIONS, "duration": "$DURATION"},
  "server": {"profile": "release", "rust_log": "warn", "database": "sqlite", "max_in_flight": "default"},
  "start_to_ready_ms": {"median": $READY_MEDIAN_MS, "runs": [$(IFS=,; echo "${READY_MS[*]}")]},
  "peak_rss_kb": $PEAK_RSS_KB,
  "routes": [$ROUTES_JSON
  ]
}
JSON
mv "$OUT.tmp" "$OUT"
printf 'results: %s\n' "${OUT#"$ROOT"/}"
