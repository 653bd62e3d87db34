#!/usr/bin/env bash
# Benchmark (not a test) of a session-authenticated database read:
# GET /api/auth/session (session lookup joined with its user), with the
# session query cache on and off, on SQLite and on PostgreSQL.
#
#   bench/db_read.sh                                    # 3 rounds x 4 configs x 10 s
#   BENCH_DURATION=5s BENCH_ROUNDS=1 bench/db_read.sh   # quick look
#
# It builds the release binary, then runs four configurations
#   sqlite-cache-on    default SQLite in a fresh data dir, HUNTAZE_QUERY_CACHE_TTL_MS=30000
#   sqlite-cache-off   same, HUNTAZE_QUERY_CACHE_TTL_MS=0
#   pg-cache-on        fresh throwaway PostgreSQL database, TTL 30000
#   pg-cache-off       same, TTL 0
# interleaved (the four, then the four again, BENCH_ROUNDS times). Each run
# starts a fresh release server (RUST_LOG=warn, every other setting at its
# default, registration limit raised), registers one user, checks that the
# session cookie reads back 200, then runs wrk (64 connections, 2 threads)
# sending `Cookie: huntaze_session=<token>`. It prints one table with the
# median req/s and median p99 per configuration, non-2xx counts, the
# highest peak RSS (VmHWM, reset after registering) of its runs' servers, and the
# ratios cache-on/cache-off per backend and PostgreSQL/SQLite; the same
# figures (and every run) go to bench/results/db_read-<UTC>.json.
#
# PostgreSQL: postgres://$BENCH_PG_USER@127.0.0.1:$BENCH_PG_PORT, trust auth
# (no password is read or sent). One database `huntaze_bench_*` is created
# per PostgreSQL run and dropped after it (and on exit). If PostgreSQL is not
# reachable (or psql is missing) only the SQLite rows run, and the table
# and JSON say so.
#
# For PostgreSQL runs the script also reads pg_stat_database's committed
# transactions of the run's database: "db xact/req" ~ 1 means every request
# went to the database, ~ 0 that the cache answered. It is a sanity check of
# the cache setting, not a measurement: PostgreSQL may report the last second
# of a busy connection's statistics up to 10 s late, so it reads a bit low
# (about 0.9 for 5 s runs), and the health sampler adds a few.
#
# Environment:
#   BENCH_DURATION     wrk duration per run (wrk syntax: 10s, 1m; default 10s)
#   BENCH_ROUNDS       rounds of the four configurations (default 3)
#   BENCH_CONNECTIONS  wrk connections (default 64)
#   BENCH_THREADS      wrk threads (default 2)
#   BENCH_PG_PORT      PostgreSQL port on 127.0.0.1 (default 5432)
#   BENCH_PG_USER      PostgreSQL role, trust auth (default postgres)
#
# Traffic goes to 127.0.0.1 only. Any HUNTAZE_* variable of the caller's
# environment is ignored so runs are comparable; a huntaze.toml is not read.
# wrk shares the CPU with the server (and PostgreSQL): compare ratios between
# runs of this script, not absolutes across machines.
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=db_read
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
PG_PORT="${BENCH_PG_PORT:-5432}"
PG_USER="${BENCH_PG_USER:-postgres}"
PG_HOST=127.0.0.1
CACHE_TTL_ON_MS=30000 # the server's default
HIGH_LIMIT=100000000
BENCH_EMAIL="bench@example.com"
BENCH_PASSWORD="correct horse battery"

positive_int BENCH_ROUNDS "$ROUNDS"
positive_int BENCH_CONNECTIONS "$CONNECTIONS"
positive_int BENCH_THREADS "$THREADS"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "BENCH_PG_PORT must be a port number"
[[ "$PG_USER" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "BENCH_PG_USER must be a plain role name"
DURATION_S="$(duration_secs "$DURATION")"

bench_init
PG_DBS=() # databases created by this script and not yet dropped
PG_OK=false
on_exit() {
    stop_server
    local db
    for db in "${PG_DBS[@]}"; do
        pg_drop "$db" 2>/dev/null || log "warning: could not drop database $db"
    done
}
need_pkg wrk wrk
need_pkg jq jq
need_cmd curl

# ---------------------------------------------------------------- PostgreSQL --
PG_NOTE=""
if ! command -v psql >/dev/null 2>&1; then
    PG_NOTE="psql is not installed"
elif ! pg_admin 'SELECT 1' >"$WORK/pg-probe.txt" 2>&1; then
    PG_NOTE="PostgreSQL not reachable at $PG_USER@$PG_HOST:$PG_PORT ($(head -n 1 "$WORK/pg-probe.txt"))"
else
    PG_OK=true
    PG_VERSION="$(pg_admin 'SHOW server_version' 2>/dev/null || echo unknown)"
fi
if [[ $PG_OK == true ]]; then
    log "PostgreSQL $PG_VERSION reachable at $PG_USER@$PG_HOST:$PG_PORT"
else
    log "$PG_NOTE: running the SQLite rows only"
fi

build_release
bench_lock

wrk_lua "$WORK/report.lua"

# ---------------------------------------------------------------- runs --
# name|backend|cache|ttl_ms
CONFIGS=(
    "sqlite-cache-on|sqlite|on|$CACHE_TTL_ON_MS"
    "sqlite-cache-off|sqlite|off|0"
)
if [[ $PG_OK == true ]]; then
    CONFIGS+=(
        "pg-cache-on|postgres|on|$CACHE_TTL_ON_MS"
        "pg-cache-off|postgres|off|0"
    )
fi

REGISTER_BODY="$(jq -cn --arg e "$BENCH_EMAIL" --arg p "$BENCH_PASSWORD" '{email: $e, password: $p}')"
RUNS_FILE="$WORK/runs.jsonl" # one JSON object per run
: >"$RUNS_FILE"

# run_one ROUND NAME BACKEND CACHE TTL
run_one() {
    local round="$1" name="$2" backend="$3" cache="$4" ttl="$5"
    local dir port base url="" db="" x0="" x1="" code token out line
    dir="$(mktemp -d "$WORK/run.XXXXXX")"
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    if [[ $backend == postgres ]]; then
        db="huntaze_bench_$$_${round}_${RANDOM}"
        PG_DBS+=("$db")
        pg_admin "CREATE DATABASE \"$db\"" >/dev/null || die "cannot create database $db"
        url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    fi
    local db_env=()
    [[ -n "$url" ]] && db_env=("HUNTAZE_DATABASE_URL=$url")
    start_huntaze "$dir" "$port" HUNTAZE_QUERY_CACHE_TTL_MS="$ttl" \
        HUNTAZE_REGISTER_PER_IP_PER_MINUTE="$HIGH_LIMIT" "${db_env[@]}"
    wait_ready "$base/readyz" "$SERVER_PID" "$dir/server.log" "the server"

    code="$(curl -s -o "$dir/register.json" -w '%{http_code}' --max-time 30 -c "$dir/cookies" \
        -H 'content-type: application/json' --data "$REGISTER_BODY" "$base/api/auth/register" || true)"
    [[ "$code" == 201 ]] || { cat "$dir/register.json" >&2 || true; die "$name: register answered $code (expected 201)"; }
    token="$(awk '$6 == "huntaze_session" {print $7}' "$dir/cookies" | tail -n 1)"
    [[ -n "$token" ]] || die "$name: no huntaze_session cookie after registering"
    code="$(curl -s -o "$dir/session.json" -w '%{http_code}' --max-time 5 \
        -H "Cookie: huntaze_session=$token" "$base/api/auth/session" || true)"
    [[ "$code" == 200 ]] || { cat "$dir/session.json" >&2 || true; die "$name: GET /api/auth/session answered $code (expected 200)"; }

    if [[ $backend == postgres ]]; then sleep 1.5; x0="$(pg_xacts "$db")"; fi
    # The peak is the load run's: registering (one Argon2id hash, 19 MiB of
    # working memory while it runs) is setup. Linux resets VmHWM to the
    # current RSS on "5" (proc(5), clear_refs); what the hash left resident
    # still counts.
    echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || log "  cannot reset VmHWM: the peak includes registering"
    log "round $round/$ROUNDS $name: wrk GET /api/auth/session for $DURATION, -c$CONNECTIONS -t$THREADS"
    out="$dir/wrk.txt"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" \
        -H "Cookie: huntaze_session=$token" "$base/api/auth/session" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed for $name"; }
    line="$(wrk_result "$out" "$name")"
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$dir/server.log" >&2; die "$name: the server died during the run"; }
    # Idle pool connections report their statistics within about a second.
    if [[ $backend == postgres ]]; then sleep 1.5; x1="$(pg_xacts "$db")"; fi
    local rss
    rss="$(peak_rss_kb "$SERVER_PID")"
    stop_server

    if [[ -n "$db" ]]; then
        pg_drop "$db" || die "cannot drop database $db"
        local keep=() d
        for d in "${PG_DBS[@]}"; do [[ "$d" == "$db" ]] || keep+=("$d"); done
        PG_DBS=("${keep[@]}")
    fi
    server_errors "$dir/server.log" "$name"

    local requests rps p50 p90 p99 max non2xx sock xpr="null"
    requests=$(field requests "$line"); rps=$(field rps "$line")
    p50=$(us_to_ms "$(field p50_us "$line")"); p90=$(us_to_ms "$(field p90_us "$line")")
    p99=$(us_to_ms "$(field p99_us "$line")"); max=$(us_to_ms "$(field max_us "$line")")
    non2xx=$(field non2xx "$line")
    sock=$(socket_errors "$line")
    if [[ -n "$x0" && -n "$x1" ]]; then
        xpr="$(awk -v a="$x0" -v b="$x1" -v n="$requests" 'BEGIN {if (n > 0) printf "%.3f", (b-a)/n; else print "null"}')"
    fi
    log "  $name: $rps req/s, p99 $p99 ms, non-2xx $non2xx, socket errors $sock, peak RSS ${rss:-?} kB$([[ $xpr != null ]] && echo ", db xact/req $xpr")"
    jq -cn --argjson round "$round" --arg name "$name" --arg backend "$backend" --arg cache "$cache" \
        --argjson ttl "$ttl" --argjson requests "$requests" --argjson rps "$rps" \
        --argjson p50 "$p50" --argjson p90 "$p90" --argjson p99 "$p99" --argjson max "$max" \
        --argjson non2xx "$non2xx" --argjson status_errors "$(field status_errors "$line")" \
        --argjson sock "$sock" --argjson xpr "$xpr" --argjson rss "${rss:-null}" \
        '{round: $round, config: $name, backend: $backend, cache: $cache, query_cache_ttl_ms: $ttl,
          requests: $requests, rps: $rps, p50_ms: $p50, p90_ms: $p90, p99_ms: $p99, max_ms: $max,
          non_2xx: $non2xx, status_errors: $status_errors, socket_errors: $sock,
          db_xact_per_request: $xpr, peak_rss_kb: $rss}' >>"$RUNS_FILE"
    rm -rf "$dir"
    sleep 1 # lets the previous server's sockets and the database settle
}

for round in $(seq 1 "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do
        IFS='|' read -r name backend cache ttl <<<"$c"
        run_one "$round" "$name" "$backend" "$cache" "$ttl"
    done
done
bench_unlock

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"


declare -A MED_RPS MED_P99
echo
printf 'Huntaze DB read benchmark: GET /api/auth/session  commit %s%s  nproc %s  wrk -t%s -c%s -d%s x %s round(s), interleaved (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS"
printf '%-17s %12s %11s %8s %9s %12s %12s   %s\n' config "req/s (med)" "p99 ms(med)" non-2xx "sock err" "db xact/req" "peak RSS MB" "req/s per round"
CONFIGS_JSON="[]"
for c in "${CONFIGS[@]}"; do
    IFS='|' read -r name backend cache ttl <<<"$c"
    MED_RPS[$name]="$(col "$name" rps | median)"
    MED_P99[$name]="$(col "$name" p99_ms | median)"
    non2xx="$(col "$name" non_2xx | awk '{s+=$1} END {print s+0}')"
    sock="$(col "$name" socket_errors | awk '{s+=$1} END {print s+0}')"
    xpr="$(col "$name" db_xact_per_request | median 2>/dev/null || true)"
    per_round="$(col "$name" rps | paste -sd' ' -)"
    # The highest of the runs' peaks (VmHWM of each run's server).
    rss="$(col "$name" peak_rss_kb | sort -n | tail -n 1)"
    printf '%-17s %12s %11s %8s %9s %12s %12s   %s\n' "$name" "${MED_RPS[$name]}" "${MED_P99[$name]}" "$non2xx" "$sock" "${xpr:--}" \
        "$([[ -n $rss ]] && awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}' || echo -)" "$per_round"
    CONFIGS_JSON="$(jq -c --arg n "$name" --arg b "$backend" --arg cache "$cache" --argjson ttl "$ttl" \
        --argjson rps "${MED_RPS[$name]}" --argjson p99 "${MED_P99[$name]}" --argjson non2xx "$non2xx" \
        --argjson sock "$sock" --argjson xpr "${xpr:-null}" --argjson rss "${rss:-null}" \
        '. + [{config: $n, backend: $b, cache: $cache, query_cache_ttl_ms: $ttl, median_rps: $rps,
               median_p99_ms: $p99, non_2xx_total: $non2xx, socket_errors_total: $sock,
               median_db_xact_per_request: $xpr, max_peak_rss_kb: $rss}]' <<<"$CONFIGS_JSON")"
done

R_SQ_CACHE="$(ratio "${MED_RPS[sqlite-cache-on]}" "${MED_RPS[sqlite-cache-off]}")"
R_SQ_P99="$(ratio "${MED_P99[sqlite-cache-on]}" "${MED_P99[sqlite-cache-off]}")"
R_PG_CACHE=null; R_PG_P99=null; R_PG_SQ_ON=null; R_PG_SQ_OFF=null
if [[ $PG_OK == true ]]; then
    R_PG_CACHE="$(ratio "${MED_RPS[pg-cache-on]}" "${MED_RPS[pg-cache-off]}")"
    R_PG_P99="$(ratio "${MED_P99[pg-cache-on]}" "${MED_P99[pg-cache-off]}")"
    R_PG_SQ_ON="$(ratio "${MED_RPS[pg-cache-on]}" "${MED_RPS[sqlite-cache-on]}")"
    R_PG_SQ_OFF="$(ratio "${MED_RPS[pg-cache-off]}" "${MED_RPS[sqlite-cache-off]}")"
fi
echo
printf 'req/s ratio cache on / off:   SQLite %s   PostgreSQL %s\n' "$R_SQ_CACHE" "$([[ $PG_OK == true ]] && echo "$R_PG_CACHE" || echo n/a)"
printf 'p99 ratio cache on / off:     SQLite %s   PostgreSQL %s\n' "$R_SQ_P99" "$([[ $PG_OK == true ]] && echo "$R_PG_P99" || echo n/a)"
if [[ $PG_OK == true ]]; then
    printf 'req/s ratio PostgreSQL / SQLite:   cache on %s   cache off %s\n' "$R_PG_SQ_ON" "$R_PG_SQ_OFF"
else
    printf 'PostgreSQL rows skipped: %s\n' "$PG_NOTE"
fi

jq -n \
    --arg now "$NOW" --argjson nproc "$NPROC" \
    --arg wrkv "$WRK_VERSION" --argjson threads "$THREADS" --argjson conns "$CONNECTIONS" \
    --arg duration "$DURATION" --argjson rounds "$ROUNDS" \
    --argjson pg_ok "$PG_OK" --arg pg_note "$PG_NOTE" --arg pg_version "${PG_VERSION:-}" \
    --argjson configs "$CONFIGS_JSON" --slurpfile runs "$RUNS_FILE" \
    --argjson r_sq "$R_SQ_CACHE" --argjson r_sq_p99 "$R_SQ_P99" \
    --argjson r_pg "$R_PG_CACHE" --argjson r_pg_p99 "$R_PG_P99" \
    --argjson r_on "$R_PG_SQ_ON" --argjson r_off "$R_PG_SQ_OFF" \
    '{
      benchmark: "db_read",
      request: "GET /api/auth/session (Cookie: huntaze_session)",
      timestamp: $now, nproc: $nproc,
      wrk: {version: $wrkv, threads: $threads, connections: $conns, duration: $duration},
      rounds: $rounds, order: "interleaved: every configuration once per round",
      server: {profile: "release", rust_log: "warn", fresh_server_per_run: true,
               sqlite: "default file in a fresh HUNTAZE_DATA_DIR",
               postgres: (if $pg_ok then {version: $pg_version, database: "fresh throwaway database per run"} else null end),
               query_cache_ttl_ms: {on: 30000, off: 0}, other_settings: "default"},
      postgres_ran: $pg_ok,
      postgres_skipped_reason: (if $pg_ok then null else $pg_note end),
      configs: $configs,
      ratios: {
        rps_cache_on_over_off: {sqlite: $r_sq, postgres: $r_pg},
        p99_cache_on_over_off: {sqlite: $r_sq_p99, postgres: $r_pg_p99},
        rps_postgres_over_sqlite: {cache_on: $r_on, cache_off: $r_off}
      },
      runs: $runs
    }' >"$WORK/result.json"
write_result db_read "$WORK/result.json"
