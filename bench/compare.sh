#!/usr/bin/env bash
# Benchmark (not a test): serving `/` side by side on loopback.
#
#   bench/compare.sh                                     # 3 rounds x 10 s
#   BENCH_DURATION=5s BENCH_ROUNDS=3 bench/compare.sh    # quicker
#
# Targets, all serving the very same page bytes (the gzip variant, since every
# request sends `Accept-Encoding: gzip`):
#   A  huntaze: the release binary with its full production middleware stack
#      (RUST_LOG=warn, fresh SQLite data dir, every other setting default);
#   B  nginx (Debian package, installed with apt-get if missing) with
#      `gzip_static on`, serving index.html / index.html.gz fetched from A
#      with the response headers A sends beside the body (its security
#      policy, copied from A's answer, and `X-Request-Id $request_id`): the
#      yardstick, since an nginx serving this page in production would have
#      to send them too (bench/nginx/nginx.conf.in; our own master on its own
#      port, never the system service);
#   B' the same nginx without those headers (nginx's own minimum), reported
#      beside B for reference; ~40 % fewer bytes per response;
#   C  the floor: examples/floor.rs, a bare tokio + axum handler answering
#      the same bytes from memory, no middleware (the binary that
#      `cargo run --release --example floor -- ...` runs, built once).
# Rounds interleave A B B' C, then /api/health on A (anonymous, and detailed
# with `Authorization: Bearer $HUNTAZE_MONITORING_TOKEN`), then the fixed
# offered rate (oha -q, open loop, latency-corrected) against A, B and C
# (the floor shows what tokio + hyper alone give at that rate).
# wrk: -t2 -c64 -d$BENCH_DURATION. Reported per target: median req/s, median
# p99, median CPU time per request (user + sys of every thread of the server's
# processes, from /proc/PID/stat around the run), non-2xx, socket errors,
# bytes/response (wrk bytes / requests, headers included) and the body size;
# ratios huntaze/nginx (target >= 1.0; huntaze/bare nginx reported too),
# huntaze/floor (target >= 0.8),
# /api/health over huntaze `/` (target >= 0.8); beside them, for reference,
# the same req/s ratios per round (paired) and their median. Fixed rate: median p99 of
# each target, and in how many rounds huntaze's p99 was not worse than
# nginx's (one round's p99 swings by half on this machine).
# Also huntaze's start-to-ready (median of 5 cold starts) and its peak RSS
# (VmHWM) after all its runs. Table on stdout; JSON in
# bench/results/compare-<UTC>.json.
#
# Environment:
#   BENCH_DURATION     wrk/oha duration per run (10s, 1m; default 10s)
#   BENCH_ROUNDS       interleaved rounds (default 3)
#   BENCH_CONNECTIONS  connections (default 64)
#   BENCH_THREADS      wrk threads (default 2)
#   BENCH_RATE         offered rate of the fixed-rate runs, req/s (default 10000)
#   BENCH_STARTS       cold starts for start-to-ready (default 5)
#   BENCH_OHA_INSTALL  1 (default): `cargo install oha --locked` if oha is
#                      missing (a long compile); 0: skip the fixed-rate part
# and the settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
#
# Builds are not under the lock (cargo serializes them). Traffic goes to
# 127.0.0.1 only. Any HUNTAZE_* variable of the caller's environment is
# ignored; a huntaze.toml is not read.
set -euo pipefail
BENCH_NAME=compare
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
RATE="${BENCH_RATE:-10000}"
STARTS="${BENCH_STARTS:-5}"
OHA_INSTALL="${BENCH_OHA_INSTALL:-1}"
ENCODING="gzip"

positive_int BENCH_ROUNDS "$ROUNDS"
positive_int BENCH_RATE "$RATE"
positive_int BENCH_CONNECTIONS "$CONNECTIONS"
positive_int BENCH_THREADS "$THREADS"
positive_int BENCH_STARTS "$STARTS"
DURATION_S="$(duration_secs "$DURATION")"

# ---------------------------------------------------------------- cleanup --
bench_init
NGX=""             # nginx prefix (its own dir: nginx workers must read it)
HZ_PID="" NGX_PID="" FLOOR_PID=""

stop_nginx() {
    [[ -n "$NGX_PID" ]] || return 0
    local workers
    workers="$(pgrep -P "$NGX_PID" 2>/dev/null || true)"
    stop_pid "$NGX_PID"
    # Only if the master had to be killed: its own workers, by pid.
    for w in $workers; do kill -KILL "$w" 2>/dev/null || true; done
    NGX_PID=""
}
on_exit() {
    stop_server
    stop_pid "$HZ_PID"
    stop_pid "$FLOOR_PID"
    stop_nginx
    [[ -n "$NGX" ]] && rm -rf "$NGX"
}

# ---------------------------------------------------------------- tools --
need_pkg wrk wrk
need_pkg jq jq
# nginx's own master runs on its own port; need_pkg keeps the package from
# starting the system service.
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_pkg nginx nginx
NGINX="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || die "nginx is not installed"
need_cmd curl gzip
[[ -r /proc/self/status ]] || die "/proc is needed to read the server's peak RSS"

OHA=""
OHA_NOTE=""
for c in oha "$HOME/.cargo/bin/oha"; do
    if command -v "$c" >/dev/null 2>&1; then OHA="$(command -v "$c")"; break; fi
done
if [[ -z "$OHA" && "$OHA_INSTALL" == 1 ]]; then
    log "oha missing: cargo install oha --locked (a long compile; BENCH_OHA_INSTALL=0 skips it)"
    if cargo install oha --locked >"$WORK/oha-install.log" 2>&1; then
        OHA="$HOME/.cargo/bin/oha"
    else
        tail -n 20 "$WORK/oha-install.log" >&2 || true
        OHA_NOTE="cargo install oha failed ($(grep -m1 '^error' "$WORK/oha-install.log" || echo 'see log'))"
    fi
fi
if [[ -z "$OHA" && -z "$OHA_NOTE" ]]; then
    OHA_NOTE="oha not installed (BENCH_OHA_INSTALL=0)"
fi
OHA_FORMAT=()
if [[ -n "$OHA" ]]; then
    if "$OHA" --help 2>&1 | grep -q -- '--output-format'; then
        OHA_FORMAT=(--output-format json)
    elif "$OHA" --help 2>&1 | grep -qE -- '(^|[[:space:]])-j,'; then
        OHA_FORMAT=(-j)
    else
        OHA_NOTE="this oha has no JSON output ($("$OHA" --version 2>&1 | head -n1))"
        OHA=""
    fi
    if [[ -n "$OHA" ]] && ! "$OHA" --help 2>&1 | grep -q -- '--latency-correction'; then
        OHA_NOTE="this oha has no --latency-correction; fixed-rate latencies would suffer from coordinated omission"
        OHA=""
    fi
fi
[[ -n "$OHA_NOTE" ]] && log "fixed-rate part skipped: $OHA_NOTE"

# ---------------------------------------------------------------- build --
build_release floor
FLOOR_BIN="$WORK/bin/floor"
MONITORING_TOKEN="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"

# start_compare_huntaze DATA_DIR PORT: huntaze with the monitoring token the
# detailed /api/health run sends; sets SERVER_PID.
start_compare_huntaze() { start_huntaze "$1" "$2" HUNTAZE_MONITORING_TOKEN="$MONITORING_TOKEN"; }

bench_lock

# ---------------------------------------------------------------- start-to-ready --
log "start-to-ready: $STARTS cold starts on a fresh SQLite data dir"
READY_MS=()
for i in $(seq 1 "$STARTS"); do
    dir="$(mktemp -d "$WORK/start.XXXXXX")"
    port="$(free_port)"
    t0=$(date +%s%N)
    start_compare_huntaze "$dir" "$port"
    wait_ready "http://127.0.0.1:$port/readyz" "$SERVER_PID" "$dir/server.log" "huntaze"
    t1=$(date +%s%N)
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b-a)/1e6}')
    READY_MS+=("$ms")
    log "  start $i: ${ms} ms"
    stop_server
    rm -rf "$dir"
done
READY_MEDIAN_MS="$(printf '%s\n' "${READY_MS[@]}" | median)"

# ---------------------------------------------------------------- A: huntaze --
HZ_DIR="$(mktemp -d "$WORK/huntaze.XXXXXX")"
HZ_PORT="$(free_port)"
start_compare_huntaze "$HZ_DIR" "$HZ_PORT"
HZ_PID="$SERVER_PID"; SERVER_PID=""
wait_ready "http://127.0.0.1:$HZ_PORT/readyz" "$HZ_PID" "$HZ_DIR/server.log" "huntaze"
log "A huntaze on 127.0.0.1:$HZ_PORT (pid $HZ_PID)"

# The page bytes every target serves.
PAGE="$WORK/page"
fetch_page "http://127.0.0.1:$HZ_PORT" "$PAGE"
IDENTITY_BYTES=$(stat -c %s "$PAGE/index.html")
GZIP_BYTES=$(stat -c %s "$PAGE/index.html.gz")
log "page: identity $IDENTITY_BYTES B, gzip $GZIP_BYTES B (sha256 $GZIP_SHA...)"

# ---------------------------------------------------------------- B: nginx --
NGX="$(mktemp -d -t huntaze-compare-nginx.XXXXXX)"
chmod 755 "$NGX"  # nginx workers run as an unprivileged user and must read html/
mkdir -p "$NGX/html" "$NGX/tmp"
cp "$PAGE/index.html" "$PAGE/index.html.gz" "$NGX/html/"
touch -r "$NGX/html/index.html" "$NGX/html/index.html.gz"
chmod 755 "$NGX/html"; chmod 644 "$NGX/html/"*
NPROC="$(nproc)"
nginx_headers_conf "$PAGE/gz.headers" "$NGX/headers.conf"
for _ in 1 2 3; do
    NGX_PORT="$(free_port "$HZ_PORT")"
    NGX_BARE_PORT="$(free_port "$HZ_PORT" "$NGX_PORT")"
    sed -e "s|@WORKERS@|$NPROC|g" -e "s|@PORT@|$NGX_PORT|g" -e "s|@BARE_PORT@|$NGX_BARE_PORT|g" -e "s|@PREFIX@|$NGX|g" \
        -e "s|@CACHE_CONTROL@|$CACHE_CONTROL|g" \
        "$ROOT/bench/nginx/nginx.conf.in" >"$NGX/nginx.conf"
    "$NGINX" -t -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$NGX/test.log" 2>&1 \
        || { cat "$NGX/test.log" >&2; die "nginx rejected bench/nginx/nginx.conf.in"; }
    : >"$NGX/error.log"
    "$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$NGX/stdout.log" 2>&1 9>&- &
    NGX_PID=$!
    # Up (or gone) within a few seconds; a port taken meanwhile: try another.
    for _ in $(seq 1 600); do
        [[ "$(http_code "http://127.0.0.1:$NGX_PORT/")" == 200 \
            && "$(http_code "http://127.0.0.1:$NGX_BARE_PORT/")" == 200 ]] && break
        kill -0 "$NGX_PID" 2>/dev/null || break
        sleep 0.01
    done
    kill -0 "$NGX_PID" 2>/dev/null && break
    wait "$NGX_PID" 2>/dev/null || true
    NGX_PID=""
    grep -q 'Address already in use' "$NGX/error.log" "$NGX/stdout.log" 2>/dev/null \
        || { cat "$NGX/error.log" "$NGX/stdout.log" >&2; die "nginx did not start"; }
    log "nginx: port $NGX_PORT or $NGX_BARE_PORT taken, trying others"
done
[[ -n "$NGX_PID" ]] || die "nginx could not bind a port"
wait_ready "http://127.0.0.1:$NGX_PORT/" "$NGX_PID" "$NGX/error.log" "nginx"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')"
log "B nginx $NGINX_VERSION on 127.0.0.1:$NGX_PORT, B' (bare) on 127.0.0.1:$NGX_BARE_PORT (master pid $NGX_PID, $NPROC workers)"

# ---------------------------------------------------------------- C: floor --
FLOOR_PORT="$(free_port "$HZ_PORT" "$NGX_PORT" "$NGX_BARE_PORT")"
"$FLOOR_BIN" --listen "127.0.0.1:$FLOOR_PORT" --file "$PAGE/index.html" --gzip-file "$PAGE/index.html.gz" \
    >"$WORK/floor.log" 2>&1 9>&- &
FLOOR_PID=$!
wait_ready "http://127.0.0.1:$FLOOR_PORT/" "$FLOOR_PID" "$WORK/floor.log" "the floor server"
log "C floor on 127.0.0.1:$FLOOR_PORT (pid $FLOOR_PID)"

# ---------------------------------------------------------------- checks --
# name|url|extra header (empty: none)
TARGETS=(
    "huntaze|http://127.0.0.1:$HZ_PORT/|"
    "nginx|http://127.0.0.1:$NGX_PORT/|"
    "nginx-bare|http://127.0.0.1:$NGX_BARE_PORT/|"
    "floor|http://127.0.0.1:$FLOOR_PORT/|"
    "health-anon|http://127.0.0.1:$HZ_PORT/api/health|"
    "health-detailed|http://127.0.0.1:$HZ_PORT/api/health|Authorization: Bearer $MONITORING_TOKEN"
)
CHECKS="$WORK/checks.jsonl"
: >"$CHECKS"
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name url extra <<<"$t"
    hdr=(-H "Accept-Encoding: $ENCODING")
    [[ -n "$extra" ]] && hdr+=(-H "$extra")
    body="$WORK/check-$name.body"
    meta="$(curl -s --max-time 5 "${hdr[@]}" -D "$WORK/check-$name.headers" -o "$body" \
        -w '%{http_code} %{size_header} %{size_download}' "$url")" || die "cannot reach $name at $url"
    read -r code hbytes bbytes <<<"$meta"
    ce="$(tr -d '\r' <"$WORK/check-$name.headers" | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')"
    sha="$(sha256sum "$body" | cut -c1-16)"
    jq -nc --arg name "$name" --argjson code "$code" --argjson h "$hbytes" --argjson b "$bbytes" \
        --arg ce "${ce:-identity}" --arg sha "$sha" \
        '{name: $name, status: $code, header_bytes: $h, body_bytes: $b, content_encoding: $ce, body_sha256_16: $sha}' >>"$CHECKS"
    if [[ "$name" == nginx ]]; then
        tr -d '\r' <"$WORK/check-$name.headers" | grep -qi '^content-security-policy: ' \
            || die "nginx (B) does not send huntaze's headers (see $NGX/headers.conf)"
    fi
    case "$name" in
        huntaze|nginx|nginx-bare|floor)
            [[ "$code" == 200 ]] || die "$name answered $code to GET /"
            [[ "$ce" == gzip && "$sha" == "$GZIP_SHA" ]] \
                || die "$name does not serve the same gzip bytes (Content-Encoding '${ce:-none}', sha256 $sha, want $GZIP_SHA)"
            ;;
    esac
    log "  $name: $code, Content-Encoding ${ce:-identity}, headers $hbytes B, body $bbytes B"
done
ANON_BYTES=$(jq -s '.[] | select(.name=="health-anon") | .body_bytes' "$CHECKS")
DETAIL_BYTES=$(jq -s '.[] | select(.name=="health-detailed") | .body_bytes' "$CHECKS")
(( DETAIL_BYTES > ANON_BYTES )) || log "warning: detailed /api/health is not larger than the anonymous one; is the token honoured?"

# ---------------------------------------------------------------- load --
wrk_lua "$WORK/report.lua"

RUNS="$WORK/runs.jsonl"
: >"$RUNS"

# CPU time per request: unlike p99 on this shared machine, it barely moves
# between runs, and it says what a latency or throughput gap costs.
CLK_TCK="$(getconf CLK_TCK)"
# server_pids NAME: the processes serving a run (nginx: master and workers).
server_pids() {
    case "$1" in
        *nginx|nginx-bare) echo "$NGX_PID" "$(pgrep -P "$NGX_PID" 2>/dev/null | paste -sd' ' - || true)" ;;
        *floor) echo "$FLOOR_PID" ;;
        *) echo "$HZ_PID" ;;
    esac
}
# cpu_ticks PID...: "user sys" clock ticks, all threads of those processes
# (fields 14 and 15 of /proc/PID/stat, read after the ")" ending the name).
cpu_ticks() {
    local p u=0 s=0 f
    for p in "$@"; do
        f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        read -r -a f <<<"${f##*) }"
        u=$(( u + f[11] )); s=$(( s + f[12] ))
    done
    echo "$u $s"
}
# cpu_json "U0 S0" "U1 S1" REQUESTS: the per-request figures as JSON.
cpu_json() {
    local u0 s0 u1 s1
    read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
    jq -nc --argjson u $(( u1 - u0 )) --argjson s $(( s1 - s0 )) --argjson n "$3" --argjson hz "$CLK_TCK" '
        def per: if $n > 0 then (. / $hz * 1e6 / $n * 100 | round) / 100 else null end;
        {cpu_user_us_per_req: ($u | per), cpu_sys_us_per_req: ($s | per),
         cpu_us_per_req: ($u + $s | per)}'
}

# wrk_run ROUND NAME URL [EXTRA_HEADER]
wrk_run() {
    local round="$1" name="$2" url="$3" extra="${4:-}" out line
    local hdr=(-H "Accept-Encoding: $ENCODING")
    [[ -n "$extra" ]] && hdr+=(-H "$extra")
    out="$WORK/wrk-$name-$round.txt"
    local pids c0 c1
    read -r -a pids <<<"$(server_pids "$name")"
    c0="$(cpu_ticks "${pids[@]}")"
    timeout --kill-after=5 $(( DURATION_S + 30 )) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" "${hdr[@]}" "$url" \
        >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed for $name"; }
    c1="$(cpu_ticks "${pids[@]}")"
    line="$(grep '^BENCH_RESULT ' "$out" | tail -n 1)"
    [[ -n "$line" ]] || { cat "$out" >&2; die "no result line from wrk for $name"; }
    local requests
    requests="$(sed -n 's/.* requests=\([0-9]*\) .*/\1/p' <<<"$line")"
    jq -nc --arg line "$line" --arg name "$name" --argjson round "$round" \
        --argjson cpu "$(cpu_json "$c0" "$c1" "${requests:-0}")" '
        ($line | split(" ")[1:] | map(split("=") | {(.[0]): (.[1] | tonumber)}) | add) as $r
        | {tool: "wrk", name: $name, round: $round, requests: $r.requests, rps: $r.rps,
           p50_ms: ($r.p50_us / 1000), p90_ms: ($r.p90_us / 1000), p99_ms: ($r.p99_us / 1000),
           max_ms: ($r.max_us / 1000), non_2xx: $r.non2xx,
           socket_errors: ($r.connect_errors + $r.read_errors + $r.write_errors + $r.timeouts),
           bytes_per_response: (if $r.requests > 0 then ($r.bytes / $r.requests | floor) else 0 end)}
        + $cpu' >>"$RUNS"
    log "  wrk $name round $round: $(jq -r 'select(.name=="'"$name"'" and .round=='"$round"') | "\(.rps) req/s, p99 \(.p99_ms) ms, \(.bytes_per_response) B/resp, CPU \(.cpu_us_per_req) us/req, non-2xx \(.non_2xx)"' "$RUNS")"
}

# oha_run ROUND NAME URL: fixed offered rate, open loop, latency corrected.
oha_run() {
    local round="$1" name="$2" url="$3" out="$WORK/oha-$2-$1.json" pids c0 c1
    read -r -a pids <<<"$(server_pids "$name")"
    c0="$(cpu_ticks "${pids[@]}")"
    timeout --kill-after=5 $(( DURATION_S + 60 )) \
        "$OHA" --no-tui "${OHA_FORMAT[@]}" -z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction \
        -H "Accept-Encoding: $ENCODING" "$url" >"$out" 2>"$out.err" \
        || { cat "$out.err" >&2; die "oha failed for $name"; }
    c1="$(cpu_ticks "${pids[@]}")"
    local requests
    requests="$(jq '[(.statusCodeDistribution // {})[]] | add // 0' "$out" 2>/dev/null || echo 0)"
    jq -c --arg name "$name" --argjson round "$round" --argjson rate "$RATE" \
        --argjson cpu "$(cpu_json "$c0" "$c1" "$requests")" '
        (.statusCodeDistribution // {}) as $codes
        | {tool: "oha", name: $name, round: $round, offered_rps: $rate,
           requests: ([$codes[]] | add // 0),
           achieved_rps: .summary.requestsPerSec,
           success_rate: .summary.successRate,
           p50_ms: (.latencyPercentiles.p50 * 1000), p90_ms: (.latencyPercentiles.p90 * 1000),
           p99_ms: (.latencyPercentiles.p99 * 1000), p999_ms: (.latencyPercentiles["p99.9"] * 1000),
           max_ms: (.summary.slowest * 1000),
           non_2xx: ([$codes | to_entries[] | select((.key | tonumber) < 200 or (.key | tonumber) > 299) | .value] | add // 0),
           errors: ([(.errorDistribution // {})[]] | add // 0),
           error_kinds: (.errorDistribution // {}),
           body_bytes_per_response: .summary.sizePerRequest} + $cpu' "$out" >>"$RUNS" \
        || { head -c 2000 "$out" >&2; die "cannot read oha's JSON for $name"; }
    log "  oha $name round $round: $(jq -r 'select(.name=="'"$name"'" and .round=='"$round"') | "offered \(.offered_rps), achieved \(.achieved_rps | floor) req/s, p99 \(.p99_ms * 100 | round / 100) ms, CPU \(.cpu_us_per_req) us/req, non-2xx \(.non_2xx), errors \(.errors)"' "$RUNS")"
}

for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS"
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r name url extra <<<"$t"
        wrk_run "$round" "$name" "$url" "$extra"
    done
    if [[ -n "$OHA" ]]; then
        oha_run "$round" "rate-huntaze" "http://127.0.0.1:$HZ_PORT/"
        oha_run "$round" "rate-nginx" "http://127.0.0.1:$NGX_PORT/"
        oha_run "$round" "rate-floor" "http://127.0.0.1:$FLOOR_PORT/"
    fi
done

kill -0 "$HZ_PID" 2>/dev/null || die "huntaze died during the load runs"
kill -0 "$NGX_PID" 2>/dev/null || die "nginx died during the load runs"
kill -0 "$FLOOR_PID" 2>/dev/null || die "the floor server died during the load runs"
PEAK_RSS_KB="$(peak_rss_kb "$HZ_PID")"
stop_pid "$HZ_PID"; HZ_PID=""
stop_nginx
stop_pid "$FLOOR_PID"; FLOOR_PID=""
bench_unlock

# ---------------------------------------------------------------- report --
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
WRK_VERSION="$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)"
OHA_VERSION=""
if [[ -n "$OHA" ]]; then OHA_VERSION="$("$OHA" --version 2>&1 | head -n1 | awk '{print $NF}' || true)"; fi
OUT="$WORK/result.json"

jq -s \
    --arg now "$NOW" --argjson nproc "$NPROC" \
    --arg nginx "$NGINX_VERSION" --arg wrk "$WRK_VERSION" --arg oha "$OHA_VERSION" --arg oha_note "$OHA_NOTE" \
    --argjson threads "$THREADS" --argjson conns "$CONNECTIONS" --arg duration "$DURATION" \
    --argjson rounds "$ROUNDS" --argjson rate "$RATE" --arg enc "$ENCODING" \
    --argjson ready_median "$READY_MEDIAN_MS" --argjson ready_runs "[$(IFS=,; echo "${READY_MS[*]}")]" \
    --argjson rss "$PEAK_RSS_KB" --argjson identity "$IDENTITY_BYTES" --argjson gz "$GZIP_BYTES" \
    --slurpfile checks "$CHECKS" '
    def median: sort | if length == 0 then null
        elif length % 2 == 1 then .[length / 2 | floor]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r2: if . == null then null else (. * 100 | round) / 100 end;
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else ($a / $b * 1000 | round) / 1000 end;
    . as $runs
    | def agg($name): ($runs | map(select(.name == $name))) as $r
        | if ($r | length) == 0 then null
          elif $r[0].tool == "wrk" then
            {runs: ($r | length), rps_median: ($r | map(.rps) | median | r2),
             p99_ms_median: ($r | map(.p99_ms) | median | r2),
             p50_ms_median: ($r | map(.p50_ms) | median | r2),
             non_2xx: ($r | map(.non_2xx) | add), socket_errors: ($r | map(.socket_errors) | add),
             bytes_per_response: ($r | map(.bytes_per_response) | median),
             cpu_us_per_req_median: ($r | map(.cpu_us_per_req) | median | r2),
             cpu_user_us_per_req_median: ($r | map(.cpu_user_us_per_req) | median | r2),
             check: ($checks | map(select(.name == $name)) | .[0]),
             rounds: ($r | map(del(.tool, .name)))}
          else
            {runs: ($r | length), offered_rps: $rate,
             achieved_rps_median: ($r | map(.achieved_rps) | median | r2),
             p99_ms_median: ($r | map(.p99_ms) | median | r2),
             p50_ms_median: ($r | map(.p50_ms) | median | r2),
             cpu_us_per_req_median: ($r | map(.cpu_us_per_req) | median | r2),
             cpu_user_us_per_req_median: ($r | map(.cpu_user_us_per_req) | median | r2),
             non_2xx: ($r | map(.non_2xx) | add), errors: ($r | map(.errors) | add),
             error_kinds: ($r | map(.error_kinds | to_entries[]) | group_by(.key)
                 | map({(.[0].key): (map(.value) | add)}) | add // {}),
             rounds: ($r | map(del(.tool, .name)))}
          end;
    {benchmark: "compare", timestamp: $now, nproc: $nproc,
     nginx_version: $nginx,
     wrk: {version: $wrk, threads: $threads, connections: $conns, duration: $duration,
           accept_encoding: $enc},
     rounds: $rounds, order: "per round: huntaze, nginx, nginx-bare, floor, health-anon, health-detailed, rate-huntaze, rate-nginx, rate-floor",
     page: {identity_bytes: $identity, gzip_bytes: $gz},
     targets: {huntaze: agg("huntaze"), nginx: agg("nginx"), nginx_bare: agg("nginx-bare"), floor: agg("floor")},
     health: {anonymous: agg("health-anon"), detailed: agg("health-detailed")},
     fixed_rate: {tool: (if $oha == "" then null else "oha \($oha) -q \($rate) --latency-correction -c \($conns)" end),
                  skipped: (if $oha_note == "" then null else $oha_note end),
                  huntaze: agg("rate-huntaze"), nginx: agg("rate-nginx"), floor: agg("rate-floor")},
     ratios: {} , targets_met: {},
     huntaze: {start_to_ready_ms: {median: $ready_median, runs: $ready_runs}, peak_rss_kb: $rss,
               profile: "release", rust_log: "warn", database: "sqlite"}}
    | .ratios = {
        huntaze_over_nginx: ratio(.targets.huntaze.rps_median; .targets.nginx.rps_median),
        huntaze_over_nginx_bare: ratio(.targets.huntaze.rps_median; .targets.nginx_bare.rps_median),
        huntaze_over_floor: ratio(.targets.huntaze.rps_median; .targets.floor.rps_median),
        health_anon_over_landing: ratio(.health.anonymous.rps_median; .targets.huntaze.rps_median),
        health_detailed_over_landing: ratio(.health.detailed.rps_median; .targets.huntaze.rps_median),
        fixed_rate_p99_huntaze_over_nginx: ratio(.fixed_rate.huntaze.p99_ms_median; .fixed_rate.nginx.p99_ms_median),
        fixed_rate_p99_floor_over_nginx: ratio(.fixed_rate.floor.p99_ms_median; .fixed_rate.nginx.p99_ms_median),
        cpu_per_req_huntaze_over_nginx: ratio(.targets.huntaze.cpu_us_per_req_median; .targets.nginx.cpu_us_per_req_median),
        cpu_per_req_huntaze_over_floor: ratio(.targets.huntaze.cpu_us_per_req_median; .targets.floor.cpu_us_per_req_median)}
    # Paired per round (the runs of one round are seconds apart, so a slow
    # moment of the machine hits both sides): reported beside the ratio of
    # the medians, which the targets use.
    | def r3: if . == null then null else (. * 1000 | round) / 1000 end;
      def paired($a; $b): [.targets[$a].rounds, .targets[$b].rounds] | transpose
          | map(if .[1].rps > 0 then .[0].rps / .[1].rps else null end) | map(select(. != null));
      .paired_rounds = {
        huntaze_over_nginx: (paired("huntaze"; "nginx") | map(r3)),
        huntaze_over_floor: (paired("huntaze"; "floor") | map(r3))}
    | .paired_rounds.huntaze_over_nginx_median = (.paired_rounds.huntaze_over_nginx | median | r3)
    | .paired_rounds.huntaze_over_floor_median = (.paired_rounds.huntaze_over_floor | median | r3)
    | .fixed_rate.p99_rounds_huntaze_not_worse_than_nginx =
        (if .fixed_rate.huntaze == null or .fixed_rate.nginx == null then null
         else [.fixed_rate.huntaze.rounds, .fixed_rate.nginx.rounds] | transpose
              | "\(map(select(.[0].p99_ms <= .[1].p99_ms)) | length) of \(length)" end)
    | def atleast($x; $t): if $x == null then null else $x >= $t end;
      .targets_met = {
        "huntaze_over_nginx>=1.0": atleast(.ratios.huntaze_over_nginx; 1.0),
        "huntaze_over_floor>=0.8": atleast(.ratios.huntaze_over_floor; 0.8),
        "health_anon_over_landing>=0.8": atleast(.ratios.health_anon_over_landing; 0.8),
        "health_detailed_over_landing>=0.8": atleast(.ratios.health_detailed_over_landing; 0.8),
        "fixed_rate_p99_huntaze<=nginx": (if .ratios.fixed_rate_p99_huntaze_over_nginx == null then null
            else .ratios.fixed_rate_p99_huntaze_over_nginx <= 1.0 end)}
    ' "$RUNS" >"$OUT" || die "could not assemble the JSON report"

echo
printf 'Huntaze vs nginx vs floor  commit %s%s  nproc %s  nginx %s  wrk -t%s -c%s -d%s x %s rounds, Accept-Encoding: %s (loopback)\n' \
    "$COMMIT" "$([[ $DIRTY == true ]] && echo ' (dirty)')" "$NPROC" "$NGINX_VERSION" "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$ENCODING"
jq -r '
    def f($n): if . == null then "-" else tostring end;
    def row($title; $a): [$title, ($a.rps_median | f(0)), ($a.p99_ms_median | f(0)), ($a.cpu_us_per_req_median | f(0)), ($a.non_2xx | f(0)),
        ($a.socket_errors | f(0)), ($a.bytes_per_response | f(0)), ($a.check.body_bytes | f(0)),
        ($a.check.content_encoding // "-")] | @tsv;
    (["target", "req/s", "p99 ms", "CPU us/req", "non-2xx", "sock err", "B/resp", "body B", "enc"] | @tsv),
    row("A huntaze /"; .targets.huntaze),
    row("B nginx / (same headers)"; .targets.nginx),
    row("B\u0027 nginx / (bare)"; .targets.nginx_bare),
    row("C floor / (bare axum)"; .targets.floor),
    row("A huntaze /api/health"; .health.anonymous),
    row("A huntaze /api/health +token"; .health.detailed)
' "$OUT" | awk -F'\t' '{printf "%-30s %11s %9s %11s %8s %9s %8s %8s %9s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
echo
jq -r '
    def v: if . == null then "n/a" else tostring end;
    def ok($c): if $c == null then "" elif $c then "  ok" else "  MISSED" end;
    "huntaze/nginx req/s:          \(.ratios.huntaze_over_nginx | v)   (target >= 1.0)\(ok(.targets_met["huntaze_over_nginx>=1.0"]))",
    "huntaze/bare nginx req/s:     \(.ratios.huntaze_over_nginx_bare | v)   (reference: nginx without huntaze'"'"'s headers)",
    "huntaze/floor req/s:          \(.ratios.huntaze_over_floor | v)   (target >= 0.8)\(ok(.targets_met["huntaze_over_floor>=0.8"]))",
    "  per round (paired):         huntaze/nginx \(.paired_rounds.huntaze_over_nginx) median \(.paired_rounds.huntaze_over_nginx_median | v); huntaze/floor \(.paired_rounds.huntaze_over_floor) median \(.paired_rounds.huntaze_over_floor_median | v)",
    "health anon / landing req/s:  \(.ratios.health_anon_over_landing | v)   (target >= 0.8)\(ok(.targets_met["health_anon_over_landing>=0.8"]))",
    "health +token / landing:      \(.ratios.health_detailed_over_landing | v)   (target >= 0.8)\(ok(.targets_met["health_detailed_over_landing>=0.8"]))",
    "",
    (if .fixed_rate.skipped != null then "fixed rate: skipped: \(.fixed_rate.skipped)"
     else "fixed rate \(.fixed_rate.huntaze.offered_rps) req/s (\(.fixed_rate.tool), median of \(.fixed_rate.huntaze.runs)):",
        "  A huntaze: p99 \(.fixed_rate.huntaze.p99_ms_median) ms, p50 \(.fixed_rate.huntaze.p50_ms_median) ms, CPU \(.fixed_rate.huntaze.cpu_us_per_req_median) us/req, achieved \(.fixed_rate.huntaze.achieved_rps_median) req/s, non-2xx \(.fixed_rate.huntaze.non_2xx), errors \(.fixed_rate.huntaze.errors) \(.fixed_rate.huntaze.error_kinds | tostring)",
        "  B nginx:   p99 \(.fixed_rate.nginx.p99_ms_median) ms, p50 \(.fixed_rate.nginx.p50_ms_median) ms, CPU \(.fixed_rate.nginx.cpu_us_per_req_median) us/req, achieved \(.fixed_rate.nginx.achieved_rps_median) req/s, non-2xx \(.fixed_rate.nginx.non_2xx), errors \(.fixed_rate.nginx.errors) \(.fixed_rate.nginx.error_kinds | tostring)",
        "  C floor:   p99 \(.fixed_rate.floor.p99_ms_median) ms, p50 \(.fixed_rate.floor.p50_ms_median) ms, CPU \(.fixed_rate.floor.cpu_us_per_req_median) us/req, achieved \(.fixed_rate.floor.achieved_rps_median) req/s, non-2xx \(.fixed_rate.floor.non_2xx), errors \(.fixed_rate.floor.errors) \(.fixed_rate.floor.error_kinds | tostring)",
        "  p99 huntaze/nginx \(.ratios.fixed_rate_p99_huntaze_over_nginx | v) (target <= 1.0)\(ok(.targets_met["fixed_rate_p99_huntaze<=nginx"])), floor/nginx \(.ratios.fixed_rate_p99_floor_over_nginx | v); huntaze not worse in \(.fixed_rate.p99_rounds_huntaze_not_worse_than_nginx) rounds"
     end),
    "",
    "CPU per request at saturation (user+sys, all threads): huntaze/nginx \(.ratios.cpu_per_req_huntaze_over_nginx | v), huntaze/floor \(.ratios.cpu_per_req_huntaze_over_floor | v)",
    "huntaze start-to-ready (median of \(.huntaze.start_to_ready_ms.runs | length)): \(.huntaze.start_to_ready_ms.median) ms   \(.huntaze.start_to_ready_ms.runs)",
    "huntaze peak RSS after its runs (VmHWM): \(.huntaze.peak_rss_kb / 1024 * 10 | round / 10) MB (\(.huntaze.peak_rss_kb) kB)",
    "page: identity \(.page.identity_bytes) B, gzip \(.page.gzip_bytes) B (same gzip bytes from all four, checked by sha256)"
' "$OUT"
write_result compare "$OUT"
