#!/usr/bin/env bash
# Benchmark (not a test) of the monitoring history's long ranges: the 7-day
# GET /api/monitoring/dashboard and /api/monitoring/health-trends (all
# components, and one), on SQLite and on PostgreSQL, over 7 days of dense
# history.
#
#   bench/history.sh                      # 100 requests per endpoint and backend
#   BENCH_REQUESTS=20 bench/history.sh    # quick look
#
# Per backend it starts the release server once on an empty database (the
# migrations), stops it, and generates with one SQL script (bench/history_gen.sql,
# the same text for both backends, :'name' values filled in by this script)
# what three instances would have written in 7 days: per-minute rollups of
# 30 routes (907,200 rows) and health samples of the 4 components every 10 s
# (725,760 rows). The aggregated tiers are not generated: the server's own
# compaction writes them when it starts again (the script waits for both
# watermarks to reach the hour), and the minute rows and raw samples older
# than the minute retention (48 h) are then deleted as the hourly prune
# would (server stopped), and the server started again. It then sends
# BENCH_REQUESTS requests per endpoint, one at a time over one keep-alive
# connection (curl), after 5 unmeasured ones, and
# prints the median and p99 of curl's time_total, the rows each read takes
# from the database (counted with the same bounds as the server's
# queries), the points answered, and the compaction's time. The figures and
# every sample go to bench/results/history-<UTC>.json.
#
# PostgreSQL: postgres://$BENCH_PG_USER@127.0.0.1:$BENCH_PG_PORT, trust auth;
# one database huntaze_bench_history_* is created and dropped after the run
# (and on exit). Without psql or a reachable server only SQLite runs.
#
# Environment:
#   BENCH_REQUESTS  measured requests per endpoint and backend (default 100)
#   BENCH_PG_PORT   PostgreSQL port on 127.0.0.1 (default 5432)
#   BENCH_PG_USER   PostgreSQL role, trust auth (default postgres)
# and the settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=history
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

REQUESTS="${BENCH_REQUESTS:-100}"
PG_PORT="${BENCH_PG_PORT:-5432}"
PG_USER="${BENCH_PG_USER:-postgres}"
PG_HOST=127.0.0.1
TOKEN="bench-history-token-0123456789abcdef"
INSTANCES=3
ROUTES=30
MINUTE_RETENTION_MS=$(( 48 * 3600 * 1000 ))

positive_int BENCH_REQUESTS "$REQUESTS"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "BENCH_PG_PORT must be a port number"
[[ "$PG_USER" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "BENCH_PG_USER must be a plain role name"

bench_init
PG_DBS=()
on_exit() {
    stop_server
    local db
    for db in "${PG_DBS[@]}"; do
        pg_drop "$db" 2>/dev/null || log "warning: could not drop database $db"
    done
}
need_pkg jq jq
need_cmd curl sqlite3

PG_OK=false
if command -v psql >/dev/null 2>&1 && pg_admin 'SELECT 1' >/dev/null 2>&1; then
    PG_OK=true
else
    log "PostgreSQL not reachable at $PG_USER@$PG_HOST:$PG_PORT: running SQLite only"
fi

build_release
bench_lock

RUNS_FILE="$WORK/runs.jsonl"
: >"$RUNS_FILE"

# sql BACKEND TARGET SQL: one statement (or script on stdin with SQL "-"),
# values as psql variables / sqlite3 parameters.
sql() {
    local backend="$1" target="$2" text="$3"
    if [[ $backend == sqlite ]]; then
        sqlite3 -bail -batch "$target" "$text"
    else
        PGCONNECT_TIMEOUT=5 psql -X -q -v ON_ERROR_STOP=1 -At -h "$PG_HOST" -p "$PG_PORT" \
            -U "$PG_USER" -d "$target" -c "$text"
    fi
}

# generate BACKEND TARGET NOW_MS: 7 days of history of $INSTANCES instances.
generate() {
    local backend="$1" target="$2" now="$3" script
    script="$(sed -e "s/:'now'/$now/g" -e "s/:'routes'/$ROUTES/g" \
        -e "s/:'instances'/$INSTANCES/g" "$ROOT/bench/history_gen.sql")"
    if [[ $backend == sqlite ]]; then
        sqlite3 -bail -batch "$target" <<<"$script"
    else
        PGCONNECT_TIMEOUT=5 psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
            -U "$PG_USER" -d "$target" <<<"$script" >/dev/null
    fi
}

# measure BASE PATH: prints time_total (ms) of each measured request.
measure() {
    local base="$1" path="$2" urls=() i
    for (( i = 0; i < REQUESTS + 5; i++ )); do urls+=(-o /dev/null "$base$path"); done
    curl -s --fail -H "Authorization: Bearer $TOKEN" -w '%{time_total}\n' "${urls[@]}" \
        | tail -n "$REQUESTS" | awk '{printf "%.3f\n", $1 * 1000}'
}

quantile() { sort -g | awk -v q="$1" '{a[NR]=$1} END {i=int(q*NR+0.999999); if (i<1) i=1; print a[i]}'; }

run_backend() {
    local backend="$1" dir port base url="" target db="" now t0 t1 hour bucket w
    dir="$(mktemp -d "$WORK/run.XXXXXX")"
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    local env=(HUNTAZE_MONITORING_TOKEN="$TOKEN" HUNTAZE_INSTANCE_ID=bench-0)
    if [[ $backend == postgres ]]; then
        db="huntaze_bench_history_$$_${RANDOM}"
        PG_DBS+=("$db")
        pg_admin "CREATE DATABASE \"$db\"" >/dev/null || die "cannot create database $db"
        url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db?sslmode=disable"
        env+=(HUNTAZE_DATABASE_URL="$url")
        target="$db"
    else
        target="$dir/huntaze.db"
    fi
    # `huntaze migrate`, not a server: a server would compact the empty
    # history at once and put the watermarks past what is generated next.
    log "$backend: migrations"
    (
        cd "$dir" || exit 1
        env HUNTAZE_DATA_DIR="$dir" HUNTAZE_CONFIG="$ROOT/bench/empty.toml" RUST_LOG=warn \
            "${env[@]}" "$SERVER_BIN" migrate
    ) >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; die "$backend: migrate failed"; }
    now="$(( $(date +%s%3N) ))"
    log "$backend: generating 7 days of history"
    t0="$(date +%s%3N)"
    generate "$backend" "$target" "$now"
    t1="$(date +%s%3N)"
    local gen_ms=$(( t1 - t0 ))
    local minutes samples
    minutes="$(sql "$backend" "$target" "SELECT COUNT(*) FROM metric_rollups")"
    samples="$(sql "$backend" "$target" "SELECT COUNT(*) FROM health_samples")"
    log "$backend: $minutes minute rows, $samples samples in ${gen_ms} ms; starting the server (it compacts)"
    t0="$(date +%s%3N)"
    start_huntaze "$dir" "$port" "${env[@]}"
    wait_ready "$base/readyz" "$SERVER_PID" "$dir/server.log" "the server"
    hour=$(( now - now % 3600000 ))
    bucket=$(( now - now % 600000 ))
    local deadline=$(( $(date +%s) + 600 ))
    while :; do
        w="$(sql "$backend" "$target" "SELECT (SELECT until FROM monitoring_tiers WHERE name = 'rollups') >= $hour AND (SELECT until FROM monitoring_tiers WHERE name = 'health') >= $bucket" 2>/dev/null || echo 0)"
        [[ "$w" == 1 || "$w" == t ]] && break
        (( $(date +%s) < deadline )) || die "$backend: compaction did not finish in 600 s"
        sleep 0.2
    done
    t1="$(date +%s%3N)"
    local compact_ms=$(( t1 - t0 ))
    # As the hourly prune does: minute rows and raw samples past the
    # minute retention, now in their tiers, go. With the server stopped
    # (one big delete would hold SQLite's write lock under its flushes), and
    # then a fresh start, so the compaction's work is not measured.
    stop_server
    local fine=$(( now - MINUTE_RETENTION_MS ))
    sql "$backend" "$target" "DELETE FROM metric_rollups WHERE minute < $fine" >/dev/null
    sql "$backend" "$target" "DELETE FROM health_samples WHERE at < $fine" >/dev/null
    start_huntaze "$dir" "$port" "${env[@]}"
    wait_ready "$base/readyz" "$SERVER_PID" "$dir/server.log" "the server"
    local hourly health_rows
    hourly="$(sql "$backend" "$target" "SELECT COUNT(*) FROM metric_rollups_hourly")"
    health_rows="$(sql "$backend" "$target" "SELECT COUNT(*) FROM health_rollups")"
    log "$backend: compacted into $hourly hourly and $health_rows health rows in ${compact_ms} ms"

    local name path p50 p99 points rows from wr wh
    now="$(( $(date +%s%3N) ))"
    from=$(( now - 7 * 24 * 3600000 ))
    wr="$(sql "$backend" "$target" "SELECT until FROM monitoring_tiers WHERE name = 'rollups'")"
    wh="$(sql "$backend" "$target" "SELECT until FROM monitoring_tiers WHERE name = 'health'")"
    for name in dashboard trends-all trends-database; do
        case "$name" in
            dashboard)
                path="/api/monitoring/dashboard?range=7d"
                rows="$(sql "$backend" "$target" "SELECT (SELECT COUNT(*) FROM metric_rollups_hourly WHERE hour >= $(( from - from % 3600000 )) AND hour < $wr) + (SELECT COUNT(*) FROM metric_rollups WHERE minute >= $wr)")"
                ;;
            trends-all)
                path="/api/monitoring/health-trends?range=7d"
                rows="$(sql "$backend" "$target" "SELECT (SELECT COUNT(*) FROM health_rollups WHERE bucket >= $(( from - from % 600000 )) AND bucket < $wh) + (SELECT COUNT(*) FROM health_samples WHERE at >= $wh)")"
                ;;
            trends-database)
                path="/api/monitoring/health-trends?range=7d&component=database"
                rows="$(sql "$backend" "$target" "SELECT (SELECT COUNT(*) FROM health_rollups WHERE component = 'database' AND bucket >= $(( from - from % 600000 )) AND bucket < $wh) + (SELECT COUNT(*) FROM health_samples WHERE component = 'database' AND at >= $wh)")"
                ;;
        esac
        if [[ $name == dashboard ]]; then
            points="$(curl -s --fail -H "Authorization: Bearer $TOKEN" "$base$path" | jq '.series.timestamps | length')"
        else
            points="$(curl -s --fail -H "Authorization: Bearer $TOKEN" "$base$path" | jq 'length')"
        fi
        measure "$base" "$path" >"$dir/$name.ms"
        p50="$(quantile 0.5 <"$dir/$name.ms")"
        p99="$(quantile 0.99 <"$dir/$name.ms")"
        log "$backend $name: p50 ${p50} ms, p99 ${p99} ms, $rows rows read, $points points"
        jq -cn --arg backend "$backend" --arg endpoint "$name" --arg path "$path" \
            --argjson p50 "$p50" --argjson p99 "$p99" --argjson rows "$rows" --argjson points "$points" \
            --argjson compact_ms "$compact_ms" --argjson minute_rows "$minutes" --argjson samples "$samples" \
            --argjson ms "$(jq -sc . <"$dir/$name.ms")" \
            '{backend: $backend, endpoint: $endpoint, path: $path, p50_ms: $p50, p99_ms: $p99,
              rows_read: $rows, points: $points, compaction_ms: $compact_ms,
              generated_minute_rows: $minute_rows, generated_samples: $samples, samples_ms: $ms}' \
            >>"$RUNS_FILE"
    done
    server_errors "$dir/server.log" "$backend"
    stop_server
    if [[ -n "$db" ]]; then pg_drop "$db" || true; fi
}

run_backend sqlite
[[ $PG_OK == true ]] && run_backend postgres

printf '\n%-9s %-16s %9s %9s %10s %7s\n' backend endpoint "p50 ms" "p99 ms" "rows read" points
jq -r '[.backend, .endpoint, .p50_ms, .p99_ms, .rows_read, .points] | @tsv' "$RUNS_FILE" \
    | while IFS=$'\t' read -r b e p50 p99 r n; do
        printf '%-9s %-16s %9s %9s %10s %7s\n' "$b" "$e" "$p50" "$p99" "$r" "$n"
    done
jq -s --argjson requests "$REQUESTS" '{scenario: "history", requests: $requests, runs: .}' \
    "$RUNS_FILE" >"$WORK/result.json"
write_result history "$WORK/result.json"
