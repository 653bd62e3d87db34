#!/usr/bin/env bash
# Benchmark (not a test) of sign-in: how close POST /api/auth/login gets to
# the raw Argon2id rate of this machine, and what a login flood does to the
# landing page.
#
#   bench/login.sh                       # 10 s per wrk run
#   BENCH_DURATION=30s bench/login.sh    # longer runs
#
# It builds the release binary and the `hash_rate` example, then:
#   0. runs examples/hash_rate.rs (no server running): single-thread Argon2id
#      hash/verify time (median of 20) and verifies/s with nproc threads;
#   1. starts the release server on loopback (fresh SQLite data dir,
#      RUST_LOG=warn, login rate limits and lockout raised so they never
#      trigger, every other setting at its default), registers one user;
#   2. login:       wrk POSTing a correct login, -c16, for BENCH_DURATION;
#                   login req/s / raw parallel verifies/s = overhead ratio;
#   3. / alone:     wrk GET / (Accept-Encoding: br), -c16;
#   4. / + flood:   at the same time, wrk flooding logins (-c64) and wrk
#                   GET / (Accept-Encoding: br, -c16), both for BENCH_DURATION;
# and prints a table; the same figures go to bench/results/login-<UTC>.json.
#
# Under the flood some logins may answer 503 (password-hash queue full, by
# design: HUNTAZE_PASSWORD_QUEUE_WAIT_MS); non-2xx answers are counted per
# run (with 401/429/503/504 broken out) and reported, not treated as failure.
#
# Environment:
#   BENCH_DURATION             wrk duration per run (10s, 1m; default 10s)
#   BENCH_THREADS              wrk threads per wrk process (default 2)
#   BENCH_LOGIN_CONNECTIONS    connections of the login run (default 16)
#   BENCH_LANDING_CONNECTIONS  connections of the / runs (default 16)
#   BENCH_FLOOD_CONNECTIONS    connections of the login flood (default 64)
#   BENCH_HASH_SECONDS         parallel part of hash_rate (default 5)
#
# Traffic goes to 127.0.0.1 only. Any HUNTAZE_* variable of the caller's
# environment is ignored (so the server and hash_rate both use the default
# Argon2 parameters and runs are comparable); a huntaze.toml is not read.
# On a 2-core machine wrk shares the CPU with the server: compare ratios
# between runs of this script, not absolutes.
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=login
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
THREADS="${BENCH_THREADS:-2}"
LOGIN_CONNECTIONS="${BENCH_LOGIN_CONNECTIONS:-16}"
LANDING_CONNECTIONS="${BENCH_LANDING_CONNECTIONS:-16}"
FLOOD_CONNECTIONS="${BENCH_FLOOD_CONNECTIONS:-64}"
HASH_SECONDS="${BENCH_HASH_SECONDS:-5}"
WRK_TIMEOUT=10s # above the 3 s hash-queue wait, so slow logins are measured, not dropped

# Raised so that they never trigger during the runs.
HIGH_LIMIT=100000000
BENCH_EMAIL="bench-login@example.com"
BENCH_PASSWORD="bench-login-Password-1"

positive_int BENCH_THREADS "$THREADS"
positive_int BENCH_LOGIN_CONNECTIONS "$LOGIN_CONNECTIONS"
positive_int BENCH_LANDING_CONNECTIONS "$LANDING_CONNECTIONS"
positive_int BENCH_FLOOD_CONNECTIONS "$FLOOD_CONNECTIONS"
DURATION_S="$(duration_secs "$DURATION")"
[[ "$HASH_SECONDS" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_HASH_SECONDS must be a number of seconds"

bench_init
WRK_PIDS=()
on_exit() {
    local p
    for p in "${WRK_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
need_pkg wrk wrk
need_pkg jq jq
need_cmd curl
[[ -r /proc/self/status ]] || die "/proc is needed to read the server's peak RSS"
build_release hash_rate
HASH_RATE="$WORK/bin/hash_rate"
bench_lock

# ---------------------------------------------------------------- raw Argon2id --
# The machine may be shared (other builds): sample how busy the CPUs are for
# 1 s before the runs (the load average would still count our own build).
cpu_sample() { awk '/^cpu / {idle=$5+$6; steal=$9; t=0; for (i=2; i<=9; i++) t+=$i; print t, idle, steal}' /proc/stat; }
read -r T0 I0 S0 < <(cpu_sample); sleep 1; read -r T1 I1 S1 < <(cpu_sample)
CPU_BUSY_PCT="$(awk -v t=$((T1 - T0)) -v i=$((I1 - I0)) 'BEGIN {printf "%.0f", (t > 0) ? 100 * (t - i) / t : 0}')"
CPU_STEAL_PCT="$(awk -v t=$((T1 - T0)) -v s=$((S1 - S0)) 'BEGIN {printf "%.0f", (t > 0) ? 100 * s / t : 0}')"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
(( CPU_BUSY_PCT > 10 )) \
    && log "warning: the CPUs were ${CPU_BUSY_PCT}% busy (steal ${CPU_STEAL_PCT}%) before the runs; figures will be noisy"
log "hash_rate: raw Argon2id with the server's default parameters (no server running)"
HASH_JSON="$(HASH_RATE_SECONDS="$HASH_SECONDS" timeout --kill-after=5 300 "$HASH_RATE" 2>"$WORK/hash_rate.err" | tail -n 1)" \
    || { cat "$WORK/hash_rate.err" >&2; die "hash_rate failed"; }
jq -e . >/dev/null 2>&1 <<<"$HASH_JSON" || { cat "$WORK/hash_rate.err" >&2; die "hash_rate printed no JSON"; }
H_MEM=$(jq -r .memory_kib <<<"$HASH_JSON")
H_T=$(jq -r .iterations <<<"$HASH_JSON")
H_P=$(jq -r .parallelism <<<"$HASH_JSON")
H_HASH_MS=$(jq -r '.hash_ms.median' <<<"$HASH_JSON")
H_VERIFY_MS=$(jq -r '.verify_ms.median' <<<"$HASH_JSON")
H_LIB_VERIFY_MS=$(jq -r '.library_verify_ms.median' <<<"$HASH_JSON")
H_THREADS=$(jq -r '.parallel.threads' <<<"$HASH_JSON")
H_PAR_RATE=$(jq -r '.parallel.verifies_per_s' <<<"$HASH_JSON")
log "  verify ${H_VERIFY_MS} ms (1 thread, median); ${H_PAR_RATE} verifies/s with ${H_THREADS} threads"

# ---------------------------------------------------------------- wrk scripts --
wrk_lua "$WORK/report.lua"

LOGIN_BODY="{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PASSWORD\"}"
{
    printf 'wrk.method = "POST"\n'
    printf "wrk.body = '%s'\n" "$LOGIN_BODY"
    printf 'wrk.headers["Content-Type"] = "application/json"\n'
    cat "$WORK/report.lua"
} >"$WORK/login.lua"

# wrk_start NAME CONNECTIONS LUA URL [wrk args...]: runs wrk in the
# background (bounded by timeout), output in $WORK/wrk-NAME.txt; appends its
# pid to WRK_PIDS and sets LAST_WRK_PID.
wrk_start() {
    local name="$1" conns="$2" lua="$3" url="$4"; shift 4
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$conns" -d"$DURATION" --timeout "$WRK_TIMEOUT" -s "$lua" "$@" "$url" \
        >"$WORK/wrk-$name.txt" 2>&1 &
    LAST_WRK_PID=$!
    WRK_PIDS+=("$LAST_WRK_PID")
}

# wrk_wait NAME PID VAR: waits for it and stores its BENCH_RESULT line in VAR.
wrk_wait() {
    local name="$1" pid="$2" var="$3" line
    wait "$pid" || { cat "$WORK/wrk-$name.txt" >&2; die "wrk failed for $name"; }
    line="$(wrk_result "$WORK/wrk-$name.txt" "$name")"
    printf -v "$var" '%s' "$line"
}

# ---------------------------------------------------------------- server --
DATA="$(mktemp -d "$WORK/load.XXXXXX")"
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
log "starting the server on $BASE (login limits and lockout raised to $HIGH_LIMIT)"
start_huntaze "$DATA" "$PORT" \
    HUNTAZE_LOGIN_PER_IP_PER_MINUTE="$HIGH_LIMIT" \
    HUNTAZE_LOGIN_PER_ACCOUNT_PER_MINUTE="$HIGH_LIMIT" \
    HUNTAZE_LOGIN_MAX_FAILURES="$HIGH_LIMIT"
wait_ready "$BASE/readyz" "$SERVER_PID" "$DATA/server.log" "the server"

code="$(curl -s -o "$WORK/register.json" -w '%{http_code}' --max-time 30 \
    -H 'Content-Type: application/json' \
    --data "$LOGIN_BODY" "$BASE/api/auth/register" || true)"
[[ "$code" == 201 ]] || { cat "$WORK/register.json" >&2 || true; die "register answered $code (expected 201)"; }
code="$(curl -s -o "$WORK/login.json" -w '%{http_code}' --max-time 30 \
    -H 'Content-Type: application/json' \
    --data "$LOGIN_BODY" "$BASE/api/auth/login" || true)"
[[ "$code" == 200 ]] || { cat "$WORK/login.json" >&2 || true; die "login answered $code (expected 200)"; }
CE="$(curl -s -o /dev/null -D - --max-time 5 -H 'Accept-Encoding: br' "$BASE/" \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')"
CE="${CE:-identity}"
log "registered $BENCH_EMAIL; a login answers 200; / with Accept-Encoding: br answers $CE"

settle() { sleep 1; } # lets queued hashes of the previous run finish

# ---------------------------------------------------------------- 1. login --
log "wrk login: POST /api/auth/login for $DURATION, -c$LOGIN_CONNECTIONS -t$THREADS"
wrk_start login "$LOGIN_CONNECTIONS" "$WORK/login.lua" "$BASE/api/auth/login"
wrk_wait login "$LAST_WRK_PID" R_LOGIN
settle

# ---------------------------------------------------------------- 2. / alone --
log "wrk /: GET / (Accept-Encoding: br) for $DURATION, -c$LANDING_CONNECTIONS -t$THREADS"
wrk_start landing-alone "$LANDING_CONNECTIONS" "$WORK/report.lua" "$BASE/" -H "Accept-Encoding: br"
wrk_wait landing-alone "$LAST_WRK_PID" R_ALONE
settle

# ---------------------------------------------------------------- 3. / during a login flood --
log "wrk / during a login flood: GET / -c$LANDING_CONNECTIONS and POST /api/auth/login -c$FLOOD_CONNECTIONS, both for $DURATION"
wrk_start flood "$FLOOD_CONNECTIONS" "$WORK/login.lua" "$BASE/api/auth/login"
FLOOD_PID=$LAST_WRK_PID
wrk_start landing-flood "$LANDING_CONNECTIONS" "$WORK/report.lua" "$BASE/" -H "Accept-Encoding: br"
wrk_wait landing-flood "$LAST_WRK_PID" R_DURING
wrk_wait flood "$FLOOD_PID" R_FLOOD
WRK_PIDS=()

kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the load runs"
PEAK_RSS_KB="$(peak_rss_kb "$SERVER_PID")"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
stop_server
bench_unlock

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"
PEAK_RSS_MB="$(kb_to_mb "$PEAK_RSS_KB")"

LOGIN_RPS="$(field rps "$R_LOGIN")"
RATIO="$(ratio "$LOGIN_RPS" "$H_PAR_RATE" 3)"
ALONE_P99="$(us_to_ms "$(field p99_us "$R_ALONE")")"
DURING_P99="$(us_to_ms "$(field p99_us "$R_DURING")")"
P99_FACTOR="$(ratio "$DURING_P99" "$ALONE_P99")"

# name|method path|connections|result line
RUNS=(
    "login|POST /api/auth/login|$LOGIN_CONNECTIONS|$R_LOGIN"
    "landing-br-alone|GET /|$LANDING_CONNECTIONS|$R_ALONE"
    "landing-br-during-flood|GET /|$LANDING_CONNECTIONS|$R_DURING"
    "login-flood|POST /api/auth/login|$FLOOD_CONNECTIONS|$R_FLOOD"
)

echo
printf 'Huntaze login benchmark  commit %s%s  nproc %s  wrk -t%s -d%s (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$THREADS" "$DURATION"
printf 'raw Argon2id m=%s KiB t=%s p=%s: hash %s ms, verify %s ms (1 thread, median of 20; library path %s ms); %s verifies/s with %s threads\n' \
    "$H_MEM" "$H_T" "$H_P" "$H_HASH_MS" "$H_VERIFY_MS" "$H_LIB_VERIFY_MS" "$H_PAR_RATE" "$H_THREADS"
printf '%-24s %-21s %5s %10s %9s %9s %9s %8s %-22s %8s\n' run request conns "req/s" "p50 ms" "p99 ms" "max ms" "non-2xx" "(401/429/503/504)" "sock err"
RUNS_JSON=""
for r in "${RUNS[@]}"; do
    IFS='|' read -r name req conns line <<<"$r"
    requests=$(field requests "$line"); rps=$(field rps "$line")
    p50ms=$(us_to_ms "$(field p50_us "$line")"); p90ms=$(us_to_ms "$(field p90_us "$line")")
    p99ms=$(us_to_ms "$(field p99_us "$line")"); maxms=$(us_to_ms "$(field max_us "$line")")
    non2xx=$(field non2xx "$line"); status_err=$(field status_errors "$line")
    s401=$(field s401 "$line"); s429=$(field s429 "$line"); s503=$(field s503 "$line"); s504=$(field s504 "$line")
    timeouts=$(field timeouts "$line")
    sock=$(socket_errors "$line")
    printf '%-24s %-21s %5s %10s %9s %9s %9s %8s %-22s %8s\n' "$name" "$req" "$conns" "$rps" "$p50ms" "$p99ms" "$maxms" \
        "$non2xx" "($s401/$s429/$s503/$s504)" "$sock"
    [[ -n "$RUNS_JSON" ]] && RUNS_JSON+=","
    RUNS_JSON+=$(printf '\n    {"name": "%s", "request": "%s", "connections": %s, "requests": %s, "rps": %s, "p50_ms": %s, "p90_ms": %s, "p99_ms": %s, "max_ms": %s, "non_2xx": %s, "non_2xx_by_status": {"401": %s, "429": %s, "503": %s, "504": %s}, "status_errors": %s, "socket_errors": %s, "timeouts": %s}' \
        "$name" "$req" "$conns" "$requests" "$rps" "$p50ms" "$p90ms" "$p99ms" "$maxms" \
        "$non2xx" "$s401" "$s429" "$s503" "$s504" "$status_err" "$sock" "$timeouts")
done
printf 'overhead ratio: login %s req/s / raw %s verifies/s = %s\n' "$LOGIN_RPS" "$H_PAR_RATE" "$RATIO"
printf '/ p99: %s ms alone, %s ms during the login flood (x%s)\n' "$ALONE_P99" "$DURING_P99" "$P99_FACTOR"
printf 'peak RSS of the server (VmHWM): %s MB (%s kB)\n' "$PEAK_RSS_MB" "$PEAK_RSS_KB"
printf 'CPU busy before the runs: %s%% (steal %s%%); load average %s before, %s after\n' \
    "$CPU_BUSY_PCT" "$CPU_STEAL_PCT" "$LOAD_START" "$LOAD_END"

cat >"$WORK/result.json" <<JSON
{
  "benchmark": "login",
  "timestamp": "$NOW",
  "nproc": $NPROC,
  "wrk": {"version": "$WRK_VERSION", "threads": $THREADS, "duration": "$DURATION", "timeout": "$WRK_TIMEOUT"},
  "server": {"profile": "release", "rust_log": "warn", "database": "sqlite",
             "argon2": {"memory_kib": $H_MEM, "iterations": $H_T, "parallelism": $H_P},
             "password_hash_concurrency": "default (nproc)", "password_queue_wait_ms": "default",
             "login_per_ip_per_minute": $HIGH_LIMIT, "login_per_account_per_minute": $HIGH_LIMIT, "login_max_failures": $HIGH_LIMIT},
  "hash_rate": $HASH_JSON,
  "login_rps_over_parallel_verifies_per_s": $RATIO,
  "landing_p99_ms": {"alone": $ALONE_P99, "during_login_flood": $DURING_P99, "factor": $P99_FACTOR},
  "landing_content_encoding": "$CE",
  "peak_rss_kb": $PEAK_RSS_KB,
  "cpu_before_runs": {"busy_pct": $CPU_BUSY_PCT, "steal_pct": $CPU_STEAL_PCT},
  "loadavg": {"before": "$LOAD_START", "after": "$LOAD_END"},
  "runs": [$RUNS_JSON
  ]
}
JSON
write_result login "$WORK/result.json"
