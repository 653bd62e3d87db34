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
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=metrics_cost
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
BENCH_PATH="/"
BENCH_ENCODING="br"

positive_int BENCH_ROUNDS "$ROUNDS"
positive_int BENCH_CONNECTIONS "$CONNECTIONS"
positive_int BENCH_THREADS "$THREADS"
DURATION_S="$(duration_secs "$DURATION")"

bench_init
need_pkg wrk wrk
need_pkg jq jq
need_cmd curl

# Requests recorded under http_route="/" so far (sum over methods and status
# codes of the duration histogram's _count), from /metrics; empty if unreadable.
recorded_root() {
    local body
    body="$(curl -s --fail --max-time 10 "$1/metrics" 2>/dev/null)" || { echo ""; return 0; }
    awk '/^http_server_request_duration_seconds_count\{/ && /http_route="\/"/ {s += $NF} END {printf "%d\n", s}' <<<"$body"
}

# Other load on the machine (other benchmarks' servers or wrk, a build):
# names of such processes running now, comma-separated (empty: none). Called
# only while this script's own server and wrk are not running.
others_busy() { pgrep -x 'wrk|huntaze|rustc|cargo' -l 2>/dev/null | awk '{print $2}' | sort -u | paste -sd, - || true; }

# ---------------------------------------------------------------- build --
build_release
wrk_lua "$WORK/report.lua"
bench_lock

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
    for _ in 1 2 3; do # another process may take the port first
        port="$(free_port)"
        start_huntaze "$dir" "$port" HUNTAZE_METRICS_ENABLED="$metrics"
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
    wait_ready "$base/readyz" "$SERVER_PID" "$dir/server.log" "the server"

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
    line="$(wrk_result "$out" "$name")"
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$dir/server.log" >&2; die "$name: the server died during the run"; }
    sleep 0.2 # requests wrk abandoned at the deadline finish
    rec1="$(recorded_root "$base")"
    stop_server
    busy1="$(others_busy)"
    busy="$(printf '%s,%s' "$busy0" "$busy1" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
    [[ -z "$busy" ]] || log "  $name: warning: other processes ran around this run ($busy); its figures may be disturbed"

    server_errors "$dir/server.log" "$name"

    local requests rps p50 p90 p99 max non2xx sock
    requests=$(field requests "$line"); rps=$(field rps "$line")
    p50=$(us_to_ms "$(field p50_us "$line")"); p90=$(us_to_ms "$(field p90_us "$line")")
    p99=$(us_to_ms "$(field p99_us "$line")"); max=$(us_to_ms "$(field max_us "$line")")
    non2xx=$(field non2xx "$line")
    sock=$(socket_errors "$line")
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
bench_unlock

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"


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

R_RPS="$(ratio "${MED_RPS[metrics-on]}" "${MED_RPS[metrics-off]}" 3)"
R_P99="$(ratio "${MED_P99[metrics-on]}" "${MED_P99[metrics-off]}" 3)"
COST_PCT="$(awk -v r="$R_RPS" 'BEGIN {if (r == "null") print "null"; else printf "%.1f", (1-r)*100}')"
echo
printf 'req/s ratio metrics on / off: %s  (metrics cost %s %% of req/s)\n' "$R_RPS" "$COST_PCT"
printf 'p99 ratio metrics on / off:   %s\n' "$R_P99"
DISTURBED="$(jq -s '[.[] | select(.other_load != null)] | length' "$RUNS_FILE")"
TOTAL_RUNS="$(jq -s 'length' "$RUNS_FILE")"
if (( DISTURBED > 0 )); then
    printf 'warning: %s of %s runs had other benchmarks or builds running around them (see other_load in the JSON); rerun on a quiet machine\n' "$DISTURBED" "$TOTAL_RUNS"
fi

jq -n \
    --arg now "$NOW" --argjson nproc "$NPROC" \
    --arg wrkv "$WRK_VERSION" --argjson threads "$THREADS" --argjson conns "$CONNECTIONS" \
    --arg duration "$DURATION" --argjson rounds "$ROUNDS" \
    --argjson configs "$CONFIGS_JSON" --slurpfile runs "$RUNS_FILE" \
    --argjson r_rps "$R_RPS" --argjson r_p99 "$R_P99" --argjson cost "$COST_PCT" \
    --argjson disturbed "$DISTURBED" \
    '{
      benchmark: "metrics_cost",
      request: "GET / (Accept-Encoding: br)",
      timestamp: $now, nproc: $nproc,
      wrk: {version: $wrkv, threads: $threads, connections: $conns, duration: $duration},
      rounds: $rounds, order: "interleaved: metrics-on, metrics-off, once each per round",
      server: {profile: "release", rust_log: "warn", fresh_server_per_run: true,
               database: "sqlite, default file in a fresh HUNTAZE_DATA_DIR",
               metrics_enabled: {on: true, off: false}, other_settings: "default"},
      configs: $configs,
      ratios: {rps_on_over_off: $r_rps, p99_on_over_off: $r_p99, rps_cost_percent: $cost},
      runs_with_other_load: $disturbed,
      runs: $runs
    }' >"$WORK/result.json"
write_result metrics_cost "$WORK/result.json"
