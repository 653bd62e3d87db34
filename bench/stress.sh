#!/usr/bin/env bash
# Benchmark (not a test): concurrency staircase to saturation and load shedding.
#
#   bench/stress.sh                        # 10 s per step
#   BENCH_DURATION=5s bench/stress.sh      # quicker
#
# It builds the release binary and starts it once on a fresh SQLite data dir
# (RUST_LOG=warn, HUNTAZE_MAX_IN_FLIGHT=$BENCH_MAX_IN_FLIGHT, every other
# setting default), then runs wrk (-t2, --timeout 5s) against
# $BENCH_PATH (/api/health) at 64, 256, 1024, 2048 and 4096 connections, and
# the highest step $BENCH_REPEATS (3) more times. For each storm it records:
#   - req/s, p50/p99 latency, non-2xx answers broken down (503 with and
#     without Retry-After, other), socket errors (connect/read/write/timeout);
#   - one 503 sampled with curl in the middle of the storm, and whether it
#     carried Retry-After;
#   - /livez latency from a separate curl loop (every 100 ms, 2 s deadline
#     each, bounded by the storm): max, p50, and how many failed;
#   - recovery: time from the end of the storm until $BENCH_PATH answers 200
#     again (curl every 10 ms, bounded);
#   - the server's RSS (VmRSS from /proc/PID/status) after the storm, and
#     once before the first one.
# It prints a table; the same figures go to bench/results/stress-<UTC>.json.
#
# Environment:
#   BENCH_DURATION       wrk duration per step (wrk syntax: 10s, 1m; default 10s)
#   BENCH_STEPS          connection counts (default "64 256 1024 2048 4096")
#   BENCH_REPEATS        extra runs of the highest step, for RSS growth (default 3)
#   BENCH_MAX_IN_FLIGHT  the server's HUNTAZE_MAX_IN_FLIGHT (default 256)
#   BENCH_PATH           route under load (default /api/health)
#   BENCH_THREADS        wrk threads (default 2)
#   BENCH_SESSION        1: register a user and send its huntaze_session cookie
#                        with every request to BENCH_PATH (for signed-in routes)
#   BENCH_SERVER_ENV     extra server settings, space-separated NAME=VALUE
#                        (HUNTAZE_* names only), e.g. HUNTAZE_QUERY_CACHE_TTL_MS=0
#   BENCH_SETTLE_S       seconds at rest after the last storm before the final
#                        RSS reading (default 25: the server returns freed
#                        heap to the OS when quiet, checking every 10 s)
#
# Every storm runs under the benchmark lock (BENCH_LOCK, see bench/README.md)
# so it never overlaps another benchmark. Traffic goes to 127.0.0.1 only.
# Any HUNTAZE_* variable of the caller's environment is ignored; a
# huntaze.toml is not read.
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=stress
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
STEPS="${BENCH_STEPS:-64 256 1024 2048 4096}"
REPEATS="${BENCH_REPEATS:-3}"
MAX_IN_FLIGHT="${BENCH_MAX_IN_FLIGHT:-256}"
TARGET_PATH="${BENCH_PATH:-/api/health}"
THREADS="${BENCH_THREADS:-2}"
USE_SESSION="${BENCH_SESSION:-0}"
read -r -a SERVER_ENV <<<"${BENCH_SERVER_ENV:-}"
SETTLE_S="${BENCH_SETTLE_S:-25}"
RECOVERY_DEADLINE_S=30
WANT_NOFILE=65536
DURATION_S="$(duration_secs "$DURATION")"

[[ "$MAX_IN_FLIGHT" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MAX_IN_FLIGHT must be a positive integer"
[[ "$REPEATS" =~ ^[0-9]+$ ]] || die "BENCH_REPEATS must be a non-negative integer"
[[ "$TARGET_PATH" == /* ]] || die "BENCH_PATH must start with /"
for kv in "${SERVER_ENV[@]}"; do
    [[ "$kv" =~ ^HUNTAZE_[A-Z0-9_]+=[^[:space:]]*$ ]] || die "BENCH_SERVER_ENV: '$kv' is not HUNTAZE_NAME=VALUE"
done
read -r -a STEP_LIST <<<"$STEPS"
(( ${#STEP_LIST[@]} > 0 )) || die "BENCH_STEPS is empty"
MAX_STEP=0
for c in "${STEP_LIST[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "BENCH_STEPS must be positive integers"
    if (( c > MAX_STEP )); then MAX_STEP=$c; fi
done

# ---------------------------------------------------------------- cleanup --
bench_init
BG_PIDS=()
on_exit() {
    local p
    for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}

# ---------------------------------------------------------------- tools --
need_pkg wrk wrk
need_cmd curl flock timeout
[[ -r /proc/self/status ]] || die "/proc is needed to read the server's RSS"

# File descriptors: wrk and the server each hold one socket per connection.
HARD_NOFILE="$(ulimit -Hn)"
if [[ "$HARD_NOFILE" == unlimited ]] || (( HARD_NOFILE >= WANT_NOFILE )); then
    ulimit -n "$WANT_NOFILE" 2>/dev/null || true
else
    ulimit -n "$HARD_NOFILE" 2>/dev/null || true
fi
NOFILE="$(ulimit -n)"
if [[ "$NOFILE" != unlimited ]] && (( NOFILE < MAX_STEP + 256 )); then
    die "ulimit -n is $NOFILE (hard $HARD_NOFILE): too low for $MAX_STEP connections"
fi
log "ulimit -n $NOFILE (wanted $WANT_NOFILE, hard limit $HARD_NOFILE)"

# ---------------------------------------------------------------- build --
build_release

# ---------------------------------------------------------------- helpers --
now_ns() { date +%s%N; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b-a)/1e6}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
server_fds() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# Kernel accept-queue overflows (system-wide TcpExt counter; loopback here).
listen_overflows() {
    awk '/^TcpExt:/ {if (!h) {for (i=1;i<=NF;i++) n[i]=$i; h=1} else {for (i=1;i<=NF;i++) if (n[i]=="ListenOverflows") print $i}}' /proc/net/netstat 2>/dev/null || true
}
shed_total() {
    curl -s --max-time 2 "$BASE/metrics" 2>/dev/null \
        | awk '/^http_server_requests_shed_total[ {]/ {print $NF; found=1} END {if (!found) print "null"}'
}

# ---------------------------------------------------------------- server --
DATA="$(mktemp -d "$WORK/data.XXXXXX")"
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
log "starting the release server on $BASE (HUNTAZE_MAX_IN_FLIGHT=$MAX_IN_FLIGHT)"
start_huntaze "$DATA" "$PORT" HUNTAZE_MAX_IN_FLIGHT="$MAX_IN_FLIGHT" "${SERVER_ENV[@]}"
wait_ready "$BASE/readyz" "$SERVER_PID" "$DATA/server.log" "the server"
SERVER_NOFILE="$(awk '/^Max open files/ {print $4}' "/proc/$SERVER_PID/limits")"

# Optional session: every request to the target carries its cookie.
AUTH=()
if [[ "$USE_SESSION" == 1 ]]; then
    code="$(curl -s -o "$WORK/register.json" -D "$WORK/register.hdr" -w '%{http_code}' --max-time 10 \
        -H 'Content-Type: application/json' \
        --data '{"email":"stress@example.com","password":"correct horse battery"}' \
        "$BASE/api/auth/register" || true)"
    [[ "$code" =~ ^2 ]] || die "register answered $code"
    session="$(tr -d '\r' <"$WORK/register.hdr" \
        | sed -n 's/^[Ss]et-[Cc]ookie: *huntaze_session=\([^;]*\).*/\1/p' | head -n 1)"
    [[ -n "$session" ]] || die "no huntaze_session cookie in the register answer"
    AUTH=(-H "Cookie: huntaze_session=$session")
fi
[[ "$(http_code "${AUTH[@]}" "$BASE$TARGET_PATH")" == 200 ]] || die "$TARGET_PATH does not answer 200 at rest"
# What one curl to the target costs at rest: the floor of the recovery figure.
REST_MS=()
for _ in 1 2 3 4 5; do
    REST_MS+=("$(curl -s -o /dev/null -w '%{time_total}' --max-time 2 "${AUTH[@]}" "$BASE$TARGET_PATH" \
        | awk '{printf "%.1f", $1*1000}')")
done
REST_CURL_MS="$(printf '%s\n' "${REST_MS[@]}" | sort -n | sed -n 3p)"
sleep 1
RSS_BEFORE_KB="$(rss_kb)"
log "RSS before the first storm: ${RSS_BEFORE_KB} kB"

# ---------------------------------------------------------------- wrk script --
cat >"$WORK/stress.lua" <<'LUA'
-- Counts non-2xx answers per thread (503 split by Retry-After presence).
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non2xx = 0
    s503_ra = 0
    s503_nora = 0
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        if status == 503 then
            if headers["retry-after"] or headers["Retry-After"] then
                s503_ra = s503_ra + 1
            else
                s503_nora = s503_nora + 1
            end
        end
    end
end

function done(summary, latency, requests)
    local n, ra, nora = 0, 0, 0
    for _, t in ipairs(threads) do
        n = n + (t:get("non2xx") or 0)
        ra = ra + (t:get("s503_ra") or 0)
        nora = nora + (t:get("s503_nora") or 0)
    end
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d s503_retry_after=%d s503_no_retry_after=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
        summary.requests, secs, summary.requests / secs,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        n, ra, nora, e.status, e.connect, e.read, e.write, e.timeout))
end
LUA

# Starts one /livez probe every 100 ms (each in the background, so a slow
# answer does not delay the next) until STOP_FILE appears, at most MAX probes,
# then waits for them. One line per probe: "<http code> <seconds>"; code 000
# means curl failed (2 s deadline).
livez_loop() {
    local out="$1" stop="$2" max="$3" i=0
    while [[ ! -e "$stop" ]] && (( i < max )); do
        (
            r="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 2 "$BASE/livez" 2>/dev/null)" || true
            [[ "$r" =~ ^[0-9]{3}\ [0-9.]+$ ]] || r="000 2.000"
            echo "$r" >>"$out"
        ) &
        i=$(( i + 1 ))
        sleep 0.1
    done
    wait
}

# Samples the target until a 503 is seen (bounded); writes its headers.
sample_503() {
    local out="$1" stop="$2" hdr="$WORK/sample.hdr"
    for _ in $(seq 1 200); do
        [[ -e "$stop" ]] && return 0
        if curl -s -o /dev/null -D "$hdr" --max-time 2 "${AUTH[@]}" "$BASE$TARGET_PATH" 2>/dev/null \
            && head -n 1 "$hdr" | grep -q ' 503'; then
            tr -d '\r' <"$hdr" >"$out"
            return 0
        fi
        sleep 0.02
    done
}

# ---------------------------------------------------------------- storms --
ROWS=()   # label|connections|BENCH_RESULT|livez n|livez fail|livez p50 ms|livez max ms|503 sampled|retry-after|recovery ms|rss kB|fds|shed delta
run_storm() {
    local label="$1" conns="$2"
    local tag="${label//[^a-zA-Z0-9]/_}"
    local out="$WORK/wrk-$tag.txt" lz="$WORK/livez-$tag.txt" stop="$WORK/stop-$tag"
    local sample="$WORK/sample-$tag.txt"
    : >"$lz"
    bench_lock
    local shed0; shed0="$(shed_total)"
    local lo0; lo0="$(listen_overflows)"
    log "storm $label: GET $TARGET_PATH, wrk -t$THREADS -c$conns -d$DURATION --timeout 5s"
    livez_loop "$lz" "$stop" $(( (DURATION_S + 40) * 10 )) &
    local lz_pid=$!; BG_PIDS+=("$lz_pid")
    ( sleep "$(awk -v d="$DURATION_S" 'BEGIN {print d/2}')"; sample_503 "$sample" "$stop" ) &
    local sp_pid=$!; BG_PIDS+=("$sp_pid")
    local wrk_rc=0
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$conns" -d"$DURATION" --timeout 5s -s "$WORK/stress.lua" \
        "${AUTH[@]}" "$BASE$TARGET_PATH" >"$out" 2>&1 || wrk_rc=$?
    local t_end; t_end=$(now_ns)
    # Recovery: first 200 from the target after the storm.
    local rec_ms="null" rec_tries=0 deadline=$(( $(date +%s) + RECOVERY_DEADLINE_S ))
    while (( $(date +%s) < deadline )); do
        rec_tries=$(( rec_tries + 1 ))
        if [[ "$(http_code "${AUTH[@]}" "$BASE$TARGET_PATH")" == 200 ]]; then rec_ms="$(ms_between "$t_end" "$(now_ns)")"; break; fi
        sleep 0.01
    done
    touch "$stop"
    wait "$lz_pid" 2>/dev/null || true
    wait "$sp_pid" 2>/dev/null || true
    BG_PIDS=()
    local shed1; shed1="$(shed_total)"
    local lo1; lo1="$(listen_overflows)"
    bench_unlock
    (( wrk_rc == 0 )) || { cat "$out" >&2; die "wrk failed (exit $wrk_rc) at $label"; }
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$DATA/server.log" >&2; die "the server died during storm $label"; }
    local line; line="$(wrk_result "$out" "$label")"

    local lz_n lz_fail lz_p50 lz_max
    lz_n=$(wc -l <"$lz")
    lz_fail=$(awk '$1 != "200" {n++} END {print n+0}' "$lz")
    lz_p50=$(awk '{print $2*1000}' "$lz" | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "null"; else printf "%.1f", a[int((NR+1)/2)]}')
    lz_max=$(awk 'BEGIN {m=-1} {v=$2*1000; if (v>m) m=v} END {if (m<0) print "null"; else printf "%.1f", m}' "$lz")
    local sampled=false ra="null"
    if [[ -s "$sample" ]]; then
        sampled=true
        ra="$(awk -F': *' 'tolower($1)=="retry-after" {print $2; exit}' "$sample")"
        ra="${ra:-none}"
    fi
    local lo_delta=null
    [[ -n "$lo0" && -n "$lo1" ]] && lo_delta=$(( lo1 - lo0 ))
    local shed_delta=null
    [[ "$shed0" != null && "$shed1" != null ]] && shed_delta=$(awk -v a="$shed0" -v b="$shed1" 'BEGIN {printf "%d", b-a}')
    sleep 1   # let closed connections be reaped before reading RSS
    local rss fds; rss="$(rss_kb)"; fds="$(server_fds)"
    ROWS+=("$label|$conns|$line|$lz_n|$lz_fail|$lz_p50|$lz_max|$sampled|$ra|$rec_ms|$rss|$fds|$shed_delta|$rec_tries|$lo_delta")
    log "  $(field rps "$line") req/s, non-2xx $(field non2xx "$line") (503+RA $(field s503_retry_after "$line")), livez max ${lz_max} ms fail $lz_fail, recovery ${rec_ms} ms, RSS ${rss} kB"
}

for c in "${STEP_LIST[@]}"; do run_storm "c$c" "$c"; done
for r in $(seq 1 "$REPEATS"); do run_storm "c$MAX_STEP-r$r" "$MAX_STEP"; done

PEAK_RSS_KB="$(peak_rss_kb "$SERVER_PID")"
kill -0 "$SERVER_PID" 2>/dev/null || die "the server died"
log "at rest for ${SETTLE_S}s before the last RSS reading"
sleep "$SETTLE_S"
RSS_REST_KB="$(rss_kb)"

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"
jnum() { [[ "$1" == null || -z "$1" ]] && echo null || echo "$1"; }

echo
printf 'Huntaze stress  commit %s%s  nproc %s  GET %s%s  wrk -t%s -d%s --timeout 5s  HUNTAZE_MAX_IN_FLIGHT=%s%s (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$TARGET_PATH" \
    "$([[ $USE_SESSION == 1 ]] && echo ' (signed in)')" "$THREADS" "$DURATION" "$MAX_IN_FLIGHT" \
    "$( (( ${#SERVER_ENV[@]} > 0 )) && echo " ${SERVER_ENV[*]}")"
printf '%-10s %6s %10s %10s %8s %8s %9s %7s %8s %6s %8s %9s %9s %6s %9s %9s %9s\n' \
    step conns "req/s" "2xx/s" "p50 ms" "p99 ms" "non-2xx" "503 %" "503+RA" other "sock err" "curl 503" "livez max" "fail" "recov ms" "RSS MB" "acc ovfl"
STEPS_JSON=""
RSS_LIST=()
for row in "${ROWS[@]}"; do
    IFS='|' read -r label conns line lz_n lz_fail lz_p50 lz_max sampled ra rec_ms rss fds shed_delta rec_tries lo_delta <<<"$row"
    requests=$(field requests "$line"); rps=$(field rps "$line")
    p50=$(us_to_ms "$(field p50_us "$line")"); p90=$(us_to_ms "$(field p90_us "$line")")
    p99=$(us_to_ms "$(field p99_us "$line")"); mx=$(us_to_ms "$(field max_us "$line")")
    non2xx=$(field non2xx "$line"); ra_n=$(field s503_retry_after "$line"); nora_n=$(field s503_no_retry_after "$line")
    s503=$(( ra_n + nora_n )); other=$(( non2xx - s503 ))
    ce=$(field connect_errors "$line"); re=$(field read_errors "$line"); we=$(field write_errors "$line"); to=$(field timeouts "$line")
    sock=$(( ce + re + we + to ))
    ok_rps=$(awk -v n="$requests" -v b="$non2xx" -v r="$rps" 'BEGIN {printf "%.1f", (n>0)? r*(n-b)/n : 0}')
    share=$(awk -v s="$s503" -v n="$requests" 'BEGIN {printf "%.1f", (n>0)? 100*s/n : 0}')
    rss_mb=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')
    RSS_LIST+=("$rss")
    printf '%-10s %6s %10s %10s %8s %8s %9s %7s %8s %6s %8s %9s %9s %6s %9s %9s %9s\n' \
        "$label" "$conns" "$rps" "$ok_rps" "$p50" "$p99" "$non2xx" "$share" "$ra_n" "$other" "$sock" \
        "$([[ $sampled == true ]] && echo "RA=$ra" || echo -)" "$lz_max" "$lz_fail/$lz_n" "$rec_ms" "$rss_mb" "${lo_delta}"
    [[ -n "$STEPS_JSON" ]] && STEPS_JSON+=","
    STEPS_JSON+=$(printf '\n    {"label": "%s", "connections": %s, "requests": %s, "rps": %s, "p50_ms": %s, "p90_ms": %s, "p99_ms": %s, "max_ms": %s, "non_2xx": %s, "status_503": %s, "status_503_with_retry_after": %s, "status_503_without_retry_after": %s, "other_non_2xx": %s, "share_503_percent": %s, "ok_rps": %s, "listen_overflows": %s, "socket_errors": {"connect": %s, "read": %s, "write": %s, "timeout": %s, "total": %s}, "shed_total_delta": %s, "sampled_503": %s, "sampled_retry_after": %s, "livez": {"probes": %s, "failed": %s, "p50_ms": %s, "max_ms": %s}, "recovery_ms": %s, "recovery_probes": %s, "rss_kb_after": %s, "server_fds_after": %s}' \
        "$label" "$conns" "$requests" "$rps" "$p50" "$p90" "$p99" "$mx" "$non2xx" "$s503" "$ra_n" "$nora_n" "$other" "$share" "$ok_rps" "$(jnum "$lo_delta")" \
        "$ce" "$re" "$we" "$to" "$sock" "$(jnum "$shed_delta")" "$sampled" "$([[ $ra == null ]] && echo null || echo "\"$ra\"")" \
        "$lz_n" "$lz_fail" "$(jnum "$lz_p50")" "$(jnum "$lz_max")" "$(jnum "$rec_ms")" "$rec_tries" "$rss" "$fds")
done
RSS_FIRST_MAX="${RSS_LIST[$(( ${#STEP_LIST[@]} - 1 ))]}"
RSS_LAST="${RSS_LIST[$(( ${#RSS_LIST[@]} - 1 ))]}"
GROWTH_KB=$(( RSS_LAST - RSS_FIRST_MAX ))
printf 'RSS: before %.1f MB; after first c%s storm %.1f MB; after %s repeats %.1f MB (%+d kB); peak (VmHWM) %.1f MB; at rest %ss later %.1f MB\n' \
    "$(awk -v k="$RSS_BEFORE_KB" 'BEGIN {print k/1024}')" "$MAX_STEP" "$(awk -v k="$RSS_FIRST_MAX" 'BEGIN {print k/1024}')" \
    "$REPEATS" "$(awk -v k="$RSS_LAST" 'BEGIN {print k/1024}')" "$GROWTH_KB" "$(awk -v k="$PEAK_RSS_KB" 'BEGIN {print k/1024}')" \
    "$SETTLE_S" "$(awk -v k="$RSS_REST_KB" 'BEGIN {print k/1024}')"
printf 'recovery floor: one curl to %s at rest takes %s ms (median of 5)\n' "$TARGET_PATH" "$REST_CURL_MS"
printf 'columns: 503 %% = share of all answers; 503+RA = 503s carrying Retry-After (wrk); other = non-2xx that are not 503;\n'
printf '         curl 503 = Retry-After of a 503 sampled with curl mid-storm (- = no 503 seen);\n'
printf '         livez max/fail = /livez probes every 100 ms during the storm; recov = ms from storm end to the first 200;\n'
printf '         acc ovfl = kernel ListenOverflows during the storm (SYNs dropped: the client retries after 1 s, 3 s, ...)\n'

cat >"$WORK/result.json" <<JSON
{
  "benchmark": "stress",
  "timestamp": "$NOW",
  "nproc": $NPROC,
  "path": "$TARGET_PATH",
  "wrk": {"version": "$WRK_VERSION", "threads": $THREADS, "duration": "$DURATION", "timeout": "5s"},
  "ulimit_nofile": {"script": "$NOFILE", "server": "$SERVER_NOFILE"},
  "server": {"profile": "release", "rust_log": "warn", "database": "sqlite", "max_in_flight": $MAX_IN_FLIGHT, "extra_env": "${SERVER_ENV[*]}"},
  "signed_in": $([[ $USE_SESSION == 1 ]] && echo true || echo false),
  "rest_curl_ms": $REST_CURL_MS,
  "rss_kb": {"before": $RSS_BEFORE_KB, "after_first_max_step": $RSS_FIRST_MAX, "after_repeats": $RSS_LAST, "growth_over_repeats": $GROWTH_KB, "peak_hwm": $PEAK_RSS_KB, "repeats": $REPEATS, "at_rest_after": $RSS_REST_KB, "settle_s": $SETTLE_S},
  "steps": [$STEPS_JSON
  ]
}
JSON
write_result stress "$WORK/result.json"
