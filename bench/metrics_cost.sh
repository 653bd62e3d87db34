#!/usr/bin/env bash
# Benchmark (not a test) of what the per-route metrics cost on the request
# path: GET / (`Accept-Encoding: br`) with HUNTAZE_METRICS_ENABLED=true (the
# default) and =false.
#
#   bench/metrics_cost.sh                                  # 3 rounds x 2 configs x 10 s
#   BENCH_DURATION=5s BENCH_ROUNDS=1 bench/metrics_cost.sh # quick look
#
# It builds the release binary, then runs the two configurations
#   metrics-on    HUNTAZE_METRICS_ENABLED=true
#   metrics-off   HUNTAZE_METRICS_ENABLED=false
# interleaved (on, off, on, off, ... BENCH_ROUNDS times). Each run starts a
# fresh release server (fresh SQLite data dir, RUST_LOG=warn, every other
# setting at its default), checks that / answers 200 with Content-Encoding br,
# then runs wrk (64 connections, 2 threads). After wrk it reads /metrics and
# counts the requests recorded under http_route="/" during the run: ~1 per wrk
# request with metrics on, 0 with them off (a check that the setting took
# effect, shown as "rec/req"). It prints one table with the median req/s and
# median p99 per configuration, non-2xx counts, and the ratio on/off of the
# median req/s (and of the median p99); the same figures (and every run) go to
# bench/results/metrics_cost-<UTC>.json.
#
# Environment:
#   BENCH_DURATION     wrk duration per run (wrk syntax: 10s, 1m; default 10s)
#   BENCH_ROUNDS       rounds of the two configurations (default 3)
#   BENCH_CONNECTIONS  wrk connections (default 64)
#   BENCH_THREADS      wrk threads (default 2)
#
# Traffic goes to 127.0.0.1 only. Any HUNTAZE_* variable of the caller's
# environment is ignored so runs are comparable; a huntaze.toml is not read.
# wrk shares the CPU with the server: compare the on/off ratio, not absolutes
# across machines. Run-to-run noise on a small machine is a few percent, so
# use more rounds (and longer runs) before reading much into a 1-2 % gap.
# Before and after each run the script looks for other load (wrk, huntaze,
# cargo or rustc processes not its own) and flags disturbed runs in the log,
# the table footer and the JSON (other_load); it does not wait for them.
set -euo pipefail

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
READY_DEADLINE_S=60
BENCH_PATH="/"
BENCH_ENCODING="br"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/huntaze"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer"

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
need_pkg() { # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    if ! as_root apt-get install -y "$2" >"$WORK/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update first"
        as_root apt-get update >>"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
        as_root apt-get install -y "$2" >>"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "cannot install $2"; }
    fi
    command -v "$1" >/dev/null || die "$1 is not installed"
}
need_pkg wrk wrk
need_pkg jq jq
command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
command -v curl >/dev/null || die "curl is not installed"

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

# A loopback port nobody listens on (connect is refused), below the kernel's
# ephemeral range when there is room (wrk's client ports come from there).
PORT_LO=20000
PORT_SPAN=40000
if read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && (( eph_lo > PORT_LO + 1000 )); then
    PORT_SPAN=$(( eph_lo - PORT_LO ))
fi
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( PORT_LO + RANDOM % PORT_SPAN ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# start_server DATA_DIR PORT METRICS_ENABLED: starts the release binary in
# DATA_DIR (so no huntaze.toml is found), sets SERVER_PID.
start_server() {
    local dir="$1" port="$2" metrics="$3"
    (
        cd "$dir"
        exec env HUNTAZE_LISTEN="127.0.0.1:$port" \
            HUNTAZE_PUBLIC_URL="http://127.0.0.1:$port" \
            HUNTAZE_DATA_DIR="$dir" \
            HUNTAZE_CONFIG="$ROOT/bench/empty.toml" \
            HUNTAZE_METRICS_ENABLED="$metrics" \
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

# Requests recorded under http_route="/" so far (sum over methods and status
# codes of the duration histogram's _count), from /metrics; empty if unreadable.
recorded_root() {
    local body
    body="$(curl -s --fail --max-time 10 "$1/metrics" 2>/dev/null)" || { echo ""; return 0; }
    awk '/^http_server_request_duration_seconds_count\{/ && /http_route="\/"/ {s += $NF} END {printf "%d\n", s}' <<<"$body"
}

median() { sort -g | awk '{a[NR]=$1 ""} END {if (NR==0) exit 1; if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
us_to_ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u/1000}'; }
# Other load on the machine (other benchmarks' servers or wrk, a build):
# names of such processes running now, comma-separated (empty: none). Called
# only while this script's own server and wrk are not running.
others_busy() { pgrep -x 'wrk|huntaze|rustc|cargo' -l 2>/dev/null | awk '{print $2}' | sort -u | paste -sd, - || true; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b != "" && b+0 > 0) printf "%.3f", a/b; else print "null"}'; }

# ---------------------------------------------------------------- build --
log "cargo build --release --bin huntaze"
cargo build --release --bin huntaze >&2 || die "release build failed"
[[ -x "$BIN" ]] || die "no binary at $BIN"

# ---------------------------------------------------------------- wrk script --
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

# ---------------------------------------------------------------- runs --
# name|HUNTAZE_METRICS_ENABLED
CONFIGS=(
    "metrics-on|true"
    "metrics-off|false"
)
RUNS_FILE="$WORK/runs.jsonl" # one JSON object per run
: >"$RUNS_FILE"

# run_one ROUND NAME METRICS_ENABLED
run_one() {
    local round="$1" name="$2" metrics="$3"
    local dir port base code ce out line rec0 rec1 recorded="null" rpr="null" busy0 busy1 busy
    busy0="$(others_busy)"
    dir="$(mktemp -d "$WORK/run.XXXXXX")"
    local attempt
    for attempt in 1 2 3; do # another process may take the port first
        port="$(free_port)" || die "no free port"
        start_server "$dir" "$port" "$metrics"
        sleep 0.05
        if ! kill -0 "$SERVER_PID" 2>/dev/null && grep -q 'Address already in use' "$dir/server.log"; then
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            log "  port $port taken, trying another"
            continue
        fi
        break
    done
    base="http://127.0.0.1:$port"
    wait_ready "$port" "$dir/server.log"

    code="$(curl -s -o /dev/null -D "$dir/headers" -w '%{http_code}' --max-time 5 \
        -H "Accept-Encoding: $BENCH_ENCODING" "$base$BENCH_PATH" || true)"
    [[ "$code" == 200 ]] || die "$name: GET $BENCH_PATH answered $code (expected 200)"
    ce="$(tr -d '\r' <"$dir/headers" | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')"
    ce="${ce:-identity}"
    [[ "$ce" == "$BENCH_ENCODING" ]] || log "  $name: warning: / answered Content-Encoding $ce, not $BENCH_ENCODING"
    rec0="$(recorded_root "$base")"

    log "round $round/$ROUNDS $name: wrk GET $BENCH_PATH (Accept-Encoding: $BENCH_ENCODING) for $DURATION, -c$CONNECTIONS -t$THREADS"
    out="$dir/wrk.txt"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" \
        -H "Accept-Encoding: $BENCH_ENCODING" "$base$BENCH_PATH" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed for $name"; }
    line="$(grep '^BENCH_RESULT ' "$out" | tail -n 1)"
    [[ -n "$line" ]] || { cat "$out" >&2; die "no result line from wrk for $name"; }
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$dir/server.log" >&2; die "$name: the server died during the run"; }
    sleep 0.2 # requests wrk abandoned at the deadline finish
    rec1="$(recorded_root "$base")"
    stop_server
    busy1="$(others_busy)"
    busy="$(printf '%s,%s' "$busy0" "$busy1" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
    [[ -z "$busy" ]] || log "  $name: warning: other processes ran around this run ($busy); its figures may be disturbed"

    if grep -qiE '\b(ERROR|panicked)\b' "$dir/server.log"; then
        log "  $name: the server logged errors:"; grep -iE '\b(ERROR|panicked)\b' "$dir/server.log" | head -n 5 >&2
    fi

    local requests rps p50 p90 p99 max non2xx sock
    requests=$(field requests "$line"); rps=$(field rps "$line")
    p50=$(us_to_ms "$(field p50_us "$line")"); p90=$(us_to_ms "$(field p90_us "$line")")
    p99=$(us_to_ms "$(field p99_us "$line")"); max=$(us_to_ms "$(field max_us "$line")")
    non2xx=$(field non2xx "$line")
    sock=$(( $(field connect_errors "$line") + $(field read_errors "$line") + $(field write_errors "$line") + $(field timeouts "$line") ))
    if [[ -n "$rec0" && -n "$rec1" ]]; then
        recorded=$(( rec1 - rec0 ))
        rpr="$(awk -v r="$recorded" -v n="$requests" 'BEGIN {if (n > 0) printf "%.3f", r/n; else print "null"}')"
        if [[ $metrics == true && $recorded -eq 0 ]] || [[ $metrics == false && $recorded -ne 0 ]]; then
            log "  $name: warning: $recorded requests recorded for $requests sent; HUNTAZE_METRICS_ENABLED=$metrics did not act as expected"
        fi
    else
        log "  $name: warning: could not read /metrics"
    fi
    log "  $name: $rps req/s, p99 $p99 ms, non-2xx $non2xx, socket errors $sock, recorded/req $rpr"
    jq -cn --argjson round "$round" --arg name "$name" --argjson metrics "$metrics" --arg ce "$ce" \
        --argjson requests "$requests" --argjson rps "$rps" \
        --argjson p50 "$p50" --argjson p90 "$p90" --argjson p99 "$p99" --argjson max "$max" \
        --argjson non2xx "$non2xx" --argjson status_errors "$(field status_errors "$line")" \
        --argjson sock "$sock" --argjson recorded "$recorded" --argjson rpr "$rpr" --arg busy "$busy" \
        '{round: $round, config: $name, metrics_enabled: $metrics, content_encoding: $ce,
          requests: $requests, rps: $rps, p50_ms: $p50, p90_ms: $p90, p99_ms: $p99, max_ms: $max,
          non_2xx: $non2xx, status_errors: $status_errors, socket_errors: $sock,
          recorded_requests: $recorded, recorded_per_request: $rpr,
          other_load: (if $busy == "" then null else ($busy | split(",")) end)}' >>"$RUNS_FILE"
    rm -rf "$dir"
    sleep 1 # lets the previous server's sockets settle
}

for round in $(seq 1 "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do
        IFS='|' read -r name metrics <<<"$c"
        run_one "$round" "$name" "$metrics"
    done
done

# ---------------------------------------------------------------- report --
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]] && DIRTY=true
NPROC="$(nproc)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"

# col CONFIG KEY: that key of every run of CONFIG, one per line.
col() { jq -r --arg c "$1" "select(.config == \$c) | .$2 // empty" "$RUNS_FILE"; }

declare -A MED_RPS MED_P99
echo
printf 'Huntaze metrics cost: GET / (Accept-Encoding: br)  commit %s%s  nproc %s  wrk -t%s -c%s -d%s x %s round(s), interleaved (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS"
printf '%-12s %12s %11s %8s %9s %8s   %s\n' config "req/s (med)" "p99 ms(med)" non-2xx "sock err" "rec/req" "req/s per round"
CONFIGS_JSON="[]"
for c in "${CONFIGS[@]}"; do
    IFS='|' read -r name metrics <<<"$c"
    MED_RPS[$name]="$(col "$name" rps | median | awk '{printf "%.1f", $1}')"
    MED_P99[$name]="$(col "$name" p99_ms | median | awk '{printf "%.2f", $1}')"
    non2xx="$(col "$name" non_2xx | awk '{s+=$1} END {print s+0}')"
    sock="$(col "$name" socket_errors | awk '{s+=$1} END {print s+0}')"
    rpr="$(col "$name" recorded_per_request | median 2>/dev/null || true)"
    per_round="$(col "$name" rps | awk '{printf "%s%.1f", (NR>1 ? " " : ""), $1}')"
    rpr_shown="$([[ -n "$rpr" ]] && awk -v r="$rpr" 'BEGIN {printf "%.3f", r}' || echo -)"
    printf '%-12s %12s %11s %8s %9s %8s   %s\n' "$name" "${MED_RPS[$name]}" "${MED_P99[$name]}" "$non2xx" "$sock" "$rpr_shown" "$per_round"
    CONFIGS_JSON="$(jq -c --arg n "$name" --argjson m "$metrics" \
        --argjson rps "${MED_RPS[$name]}" --argjson p99 "${MED_P99[$name]}" --argjson non2xx "$non2xx" \
        --argjson sock "$sock" --argjson rpr "${rpr:-null}" \
        '. + [{config: $n, metrics_enabled: $m, median_rps: $rps, median_p99_ms: $p99,
               non_2xx_total: $non2xx, socket_errors_total: $sock, median_recorded_per_request: $rpr}]' <<<"$CONFIGS_JSON")"
done

R_RPS="$(ratio "${MED_RPS[metrics-on]}" "${MED_RPS[metrics-off]}")"
R_P99="$(ratio "${MED_P99[metrics-on]}" "${MED_P99[metrics-off]}")"
COST_PCT="$(awk -v r="$R_RPS" 'BEGIN {if (r == "null") print "null"; else printf "%.1f", (1-r)*100}')"
echo
printf 'req/s ratio metrics on / off: %s  (metrics cost %s %% of req/s)\n' "$R_RPS" "$COST_PCT"
printf 'p99 ratio metrics on / off:   %s\n' "$R_P99"
DISTURBED="$(jq -s '[.[] | select(.other_load != null)] | length' "$RUNS_FILE")"
TOTAL_RUNS="$(jq -s 'length' "$RUNS_FILE")"
if (( DISTURBED > 0 )); then
    printf 'warning: %s of %s runs had other benchmarks or builds running around them (see other_load in the JSON); rerun on a quiet machine\n' "$DISTURBED" "$TOTAL_RUNS"
fi

mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/metrics_cost-$STAMP.json"
jq -n \
    --arg now "$NOW" --arg commit "$COMMIT" --argjson dirty "$DIRTY" --argjson nproc "$NPROC" \
    --arg wrkv "$WRK_VERSION" --argjson threads "$THREADS" --argjson conns "$CONNECTIONS" \
    --arg duration "$DURATION" --argjson rounds "$ROUNDS" \
    --argjson configs "$CONFIGS_JSON" --slurpfile runs "$RUNS_FILE" \
    --argjson r_rps "$R_RPS" --argjson r_p99 "$R_P99" --argjson cost "$COST_PCT" \
    --argjson disturbed "$DISTURBED" \
    '{
      benchmark: "metrics_cost",
      request: "GET / (Accept-Encoding: br)",
      timestamp: $now, commit: $commit, dirty: $dirty, nproc: $nproc,
      wrk: {version: $wrkv, threads: $threads, connections: $conns, duration: $duration},
      rounds: $rounds, order: "interleaved: metrics-on, metrics-off, once each per round",
      server: {profile: "release", rust_log: "warn", fresh_server_per_run: true,
               database: "sqlite, default file in a fresh HUNTAZE_DATA_DIR",
               metrics_enabled: {on: true, off: false}, other_settings: "default"},
      configs: $configs,
      ratios: {rps_on_over_off: $r_rps, p99_on_over_off: $r_p99, rps_cost_percent: $cost},
      runs_with_other_load: $disturbed,
      runs: $runs
    }' >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
printf 'results: %s\n' "${OUT#"$ROOT"/}"
