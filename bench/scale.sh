#!/usr/bin/env bash
# Benchmark (not a test): the scaling curve. Throughput through
# nginx (the deploy/ load-balancer directives) with 1, 2 and 3 identical
# instances on one PostgreSQL database and Redis, for
#   /                    the landing page (served from each instance's memory)
#   /api/auth/session    a session-authenticated read (in-process cache over
#                        Redis over PostgreSQL)
# plus one instance without nginx, to show what the proxy hop costs.
#
#   bench/scale.sh                                   # 3 rounds x 10 s
#   BENCH_DURATION=5s BENCH_ROUNDS=1 bench/scale.sh  # quicker
#
# Rounds interleave 1, 2, 3 instances; medians per cell. wrk -t2 -c64.
# Table on stdout, JSON in bench/results/scale-<UTC>.json.
#
# Read the curve for what it is: on one machine every instance, nginx,
# PostgreSQL, Redis and wrk share the same cores, so more instances cannot
# add CPU; the curve shows the cost of the extra hop and of spreading, not
# the capacity of N machines.
#
# Environment: BENCH_DURATION (10s), BENCH_ROUNDS (3), BENCH_CONNECTIONS (64),
# BENCH_THREADS (2), BENCH_REDIS_URL (redis://127.0.0.1:6379),
# BENCH_PG_PORT (5432), BENCH_PG_USER (postgres), and the settings every
# script reads (BENCH_SERVER_BIN, BENCH_BUILT, BENCH_WRITE_BASELINE,
# BENCH_LOCK): bench/README.md.
set -euo pipefail
BENCH_NAME=scale
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
PG_PORT="${BENCH_PG_PORT:-5432}"
PG_USER="${BENCH_PG_USER:-postgres}"
SECRET="MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
PASSWORD="correct horse battery"
PG_HOST=127.0.0.1
positive_int BENCH_ROUNDS "$ROUNDS"
positive_int BENCH_CONNECTIONS "$CONNECTIONS"
positive_int BENCH_THREADS "$THREADS"
duration_secs "$DURATION" >/dev/null

bench_init
chmod 755 "$WORK" # nginx workers run as an unprivileged user
DB="huntaze_bench_scale_$RANDOM$RANDOM"
DB_CREATED=false
PIDS=()
NGX_PID=""
on_exit() {
    local p
    stop_pid "$NGX_PID"
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ $DB_CREATED == true ]]; then pg_drop "$DB" 2>/dev/null || log "warning: could not drop database $DB"; fi
}
need_pkg wrk wrk
need_pkg jq jq
need_pkg psql postgresql-client
[[ -x /usr/sbin/nginx ]] || need_pkg nginx nginx
NGINX=/usr/sbin/nginx

build_release

pg_admin "CREATE DATABASE \"$DB\"" >/dev/null || die "cannot create database $DB"
DB_CREATED=true
NGX_PORT="$(free_port)"
PORTS=()
for i in 0 1 2; do PORTS+=("$(free_port "$NGX_PORT" "${PORTS[@]}")"); done
PREFIX="huntaze-bench-$RANDOM$RANDOM"
for i in 0 1 2; do
    mkdir -p "$WORK/i$i"
    start_huntaze "$WORK/i$i" "${PORTS[$i]}" \
        HUNTAZE_PUBLIC_URL="http://127.0.0.1:$NGX_PORT" \
        HUNTAZE_DATABASE_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/$DB" \
        HUNTAZE_REDIS_URL="$REDIS_URL" HUNTAZE_REDIS_PREFIX="$PREFIX" \
        HUNTAZE_SECRET_KEY="$SECRET" HUNTAZE_ENCRYPTION_KEY="$SECRET" \
        HUNTAZE_TRUSTED_PROXIES=127.0.0.1 HUNTAZE_INSTANCE_ID="bench-$i"
    PIDS+=("$SERVER_PID")
    SERVER_PID=""
done
for i in 0 1 2; do
    wait_ready "http://127.0.0.1:${PORTS[$i]}/readyz" "${PIDS[$i]}" "$WORK/i$i/server.log" "instance $i"
done
COOKIE="$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
    -d "{\"email\":\"scale@example.com\",\"password\":\"$PASSWORD\"}" \
    "http://127.0.0.1:${PORTS[0]}/api/auth/register" \
    | awk -F': ' 'tolower($1)=="set-cookie" && $2 ~ /^huntaze_session=/ {split($2,a,";"); print a[1]}')"
[[ -n "$COOKIE" ]] || die "registration gave no session cookie"

nginx_with() { # nginx_with N: (re)start nginx in front of the first N instances
    stop_pid "$NGX_PID"; NGX_PID=""
    local servers="" i
    for (( i = 0; i < $1; i++ )); do
        servers+="        server 127.0.0.1:${PORTS[$i]} max_fails=3 fail_timeout=10s;"$'\n'
    done
    cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    upstream huntaze {
$servers        keepalive 64;
        keepalive_requests 10000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$http_host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_next_upstream error timeout http_502 http_503 http_504;
        location / { proxy_pass http://huntaze; }
    }
}
CONF
    "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" 9>&- &
    NGX_PID=$!
    wait_http "http://127.0.0.1:$NGX_PORT/livez" 20 || die "nginx did not answer"
}

bench_lock
declare -A RPS FAIL
run() { # run LABEL URL
    local out="$WORK/wrk.out"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "Cookie: $COOKIE" -H 'Accept-Encoding: gzip' "$2" >"$out" 2>&1
    RPS[$1]+="$(wrk_rps "$out") "
    FAIL[$1]=$(( ${FAIL[$1]:-0} + $(wrk_failures "$out") ))
}
for (( r = 1; r <= ROUNDS; r++ )); do
    log "round $r/$ROUNDS"
    run "direct:/" "http://127.0.0.1:${PORTS[0]}/"
    run "direct:/api/auth/session" "http://127.0.0.1:${PORTS[0]}/api/auth/session"
    for n in 1 2 3; do
        nginx_with "$n"
        run "$n:/" "http://127.0.0.1:$NGX_PORT/"
        run "$n:/api/auth/session" "http://127.0.0.1:$NGX_PORT/api/auth/session"
    done
done

med() { tr ' ' '\n' <<<"${RPS[$1]}" | grep . | median; }
printf '\n%-22s %12s %12s %12s %12s   %s\n' "path" "direct" "nginx+1" "nginx+2" "nginx+3" "3/1"
JSON="[]"
for path in / /api/auth/session; do
    d=$(med "direct:$path"); a=$(med "1:$path"); b=$(med "2:$path"); c=$(med "3:$path")
    ratio=$(awk -v a="$a" -v c="$c" 'BEGIN {printf "%.2f", c / a}')
    printf '%-22s %12.0f %12.0f %12.0f %12.0f   %s\n' "$path" "$d" "$a" "$b" "$c" "$ratio"
    fails=$(( ${FAIL[direct:$path]:-0} + ${FAIL[1:$path]:-0} + ${FAIL[2:$path]:-0} + ${FAIL[3:$path]:-0} ))
    JSON=$(jq -c --arg p "$path" --argjson d "$d" --argjson a "$a" --argjson b "$b" --argjson c "$c" \
        --argjson f "$fails" \
        '. + [{path: $p, direct_rps: $d, nginx_1_rps: $a, nginx_2_rps: $b, nginx_3_rps: $c, failures: $f}]' <<<"$JSON")
    (( fails == 0 )) || log "warning: $fails failed responses on $path"
done
bench_unlock
jq -n --argjson rows "$JSON" \
    --arg duration "$DURATION" --argjson rounds "$ROUNDS" --argjson connections "$CONNECTIONS" \
    --arg cpus "$(nproc)" \
    '{benchmark: "scale", duration: $duration, rounds: $rounds, connections: $connections, cpus: $cpus, rows: $rows}' \
    >"$WORK/result.json"
write_result scale "$WORK/result.json"
