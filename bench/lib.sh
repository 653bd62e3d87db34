# Shared helpers of the bench/*.sh scripts (sourced, never run). A script
# starts with
#
#   set -euo pipefail
#   BENCH_NAME=landing
#   ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#   cd "$ROOT"
#   # shellcheck source=bench/lib.sh
#   source bench/lib.sh
#   bench_init
#
# and then uses the helpers below instead of its own copies, so that a fix
# (a port probe, a readiness wait, the result metadata) lands everywhere.
# shellcheck shell=bash

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
READY_DEADLINE_S="${READY_DEADLINE_S:-60}"
WORK="${WORK:-}"
SERVER_PID=""
SERVER_BIN=""
COMMIT=""
DIRTY=false

# ---------------------------------------------------------------- messages --
log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- set-up --
# bench_init: ignores the caller's server settings, records the state of the
# tree, refuses a baseline that could not be reproduced, makes $WORK and
# installs the exit trap. Scripts with more to undo on exit define
# `on_exit` (called first, with $WORK still there).
bench_init() {
    # Runs must be comparable: no HUNTAZE_* of the caller's shell reaches a
    # server (each script passes the settings it measures explicitly).
    local v
    while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^HUNTAZE_' || true)
    git_state
    baseline_guard
    WORK="$(mktemp -d -t "huntaze-${BENCH_NAME:-bench}.XXXXXX")"
    KEEP_WORK=false
    trap _bench_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_bench_exit() {
    local rc=$?
    if declare -F on_exit >/dev/null; then on_exit || true; fi
    stop_server
    if [[ -n "$WORK" && $KEEP_WORK != true ]]; then rm -rf "$WORK"; fi
    exit "$rc"
}

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# need_cmd COMMAND...: dies naming the first one missing.
need_cmd() {
    local c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "$c is not installed"; done
}

# need_pkg COMMAND PACKAGE: installs the Debian package when the command is
# missing (apt-get update only if the first install fails), without letting
# its post-install start a system service (nginx would take port 80).
need_pkg() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    local created=false aptlog
    aptlog="$(mktemp -t huntaze-apt.XXXXXX)"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        created=true
    fi
    local ok=true
    if ! as_root apt-get install -y "$2" >"$aptlog" 2>&1; then
        as_root apt-get update >>"$aptlog" 2>&1 && as_root apt-get install -y "$2" >>"$aptlog" 2>&1 || ok=false
    fi
    $created && as_root rm -f /usr/sbin/policy-rc.d
    if [[ $ok != true ]]; then cat "$aptlog" >&2; rm -f "$aptlog"; die "cannot install $2"; fi
    rm -f "$aptlog"
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] || die "$1 is not installed"
}

# duration_secs DURATION: seconds of a wrk-style duration (10, 10s, 2m, 1h),
# used to bound the load tools; dies on anything else.
duration_secs() {
    local d="$1" s
    [[ "$d" =~ ^[0-9]+[smh]?$ ]] || die "a duration must look like 10s, 2m or 1h, not '$d'"
    case "$d" in
        *h) s=$(( ${d%h} * 3600 )) ;;
        *m) s=$(( ${d%m} * 60 )) ;;
        *s) s=$(( ${d%s} )) ;;
        *)  s=$(( d )) ;;
    esac
    (( s > 0 )) || die "a duration must be positive, not '$d'"
    echo "$s"
}

# positive_int NAME VALUE: dies unless VALUE is a positive integer.
positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }

# ---------------------------------------------------------------- ports --
# free_port [TAKEN...]: a loopback port nobody listens on, other than TAKEN
# (ports picked but not bound yet). Listening ports are picked below the
# kernel's ephemeral range: a client socket's port there (wrk's, curl's, in
# TIME_WAIT) passes the connect probe but makes bind() fail.
free_port() {
    local low=20000 span eph p t taken
    eph="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    (( eph > low + 1000 )) || low=1024
    span=$(( eph - low ))
    for _ in $(seq 1 100); do
        p=$(( low + RANDOM % span ))
        taken=false
        for t in "$@"; do [[ "$t" == "$p" ]] && taken=true; done
        $taken && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    die "no free port"
}

# ---------------------------------------------------------------- HTTP --
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" 2>/dev/null || true; }

# wait_http URL [DEADLINE_S]: until URL answers 200; fails after the deadline.
wait_http() {
    local url="$1" deadline=$(( $(date +%s) + ${2:-$READY_DEADLINE_S} ))
    until [[ "$(http_code "$url")" == 200 ]]; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.02
    done
}

# wait_ready URL PID LOG [WHAT]: polls URL every 5 ms until it answers 200;
# dies (showing the end of LOG) when PID exits first or after
# READY_DEADLINE_S. The poll is fine-grained because start-to-ready is one
# of the figures measured.
wait_ready() {
    local url="$1" pid="$2" logf="$3" what="${4:-the process behind $1}"
    local deadline=$(( $(date +%s) + READY_DEADLINE_S ))
    while :; do
        [[ "$(http_code "$url")" == 200 ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logf" >&2 || true
            die "$what exited before it was ready"
        fi
        if (( $(date +%s) >= deadline )); then
            tail -n 20 "$logf" >&2 || true
            die "$what not ready after ${READY_DEADLINE_S}s"
        fi
        sleep 0.005
    done
}

# ---------------------------------------------------------------- numbers --
median() { sort -g | awk '{a[NR]=$1 ""} END {if (NR==0) exit 1; if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
us_to_ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u/1000}'; }
kb_to_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
# ratio A B [DECIMALS]: A/B, or null when either is missing or B is 0.
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" \
        'BEGIN {if (a != "" && a != "null" && b != "" && b != "null" && b+0 > 0) printf "%." d "f", a/b; else print "null"}'
}

# ---------------------------------------------------------------- wrk --
# wrk_lua FILE: writes the wrk script every load run uses. It counts non-2xx
# answers per thread (401/429/503/504 broken out) and prints one line
#   BENCH_RESULT requests=... rps=... p99_us=... non2xx=... timeouts=...
# that `field` reads. FILE may be appended to a script that sets wrk.method,
# wrk.body and wrk.headers first.
wrk_lua() {
    cat >"$1" <<'LUA'
-- Counts non-2xx answers (401/429/503/504 broken out) per thread and prints
-- one machine-readable line.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non2xx = 0
    s401 = 0
    s429 = 0
    s503 = 0
    s504 = 0
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        if status == 401 then s401 = s401 + 1
        elseif status == 429 then s429 = s429 + 1
        elseif status == 503 then s503 = s503 + 1
        elseif status == 504 then s504 = s504 + 1
        end
    end
end

function done(summary, latency, requests)
    local n, a, b, c, d = 0, 0, 0, 0, 0
    for _, t in ipairs(threads) do
        n = n + (t:get("non2xx") or 0)
        a = a + (t:get("s401") or 0)
        b = b + (t:get("s429") or 0)
        c = c + (t:get("s503") or 0)
        d = d + (t:get("s504") or 0)
    end
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d s401=%d s429=%d s503=%d s504=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
        summary.requests, secs, summary.requests / secs, summary.bytes,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        n, a, b, c, d, e.status, e.connect, e.read, e.write, e.timeout))
end
LUA
}

# wrk_result OUTPUT_FILE NAME: the BENCH_RESULT line of a finished wrk run.
wrk_result() {
    local line
    line="$(grep '^BENCH_RESULT ' "$1" | tail -n 1)"
    [[ -n "$line" ]] || { cat "$1" >&2; die "no result line from wrk for $2"; }
    echo "$line"
}
# field KEY LINE: one value of a BENCH_RESULT line.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
# socket_errors LINE: connect + read + write errors + timeouts.
socket_errors() {
    echo $(( $(field connect_errors "$1") + $(field read_errors "$1") + $(field write_errors "$1") + $(field timeouts "$1") ))
}
# wrk_rps OUTPUT_FILE: requests/s from wrk's own summary (runs without the
# lua script).
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
# wrk_failures OUTPUT_FILE: non-2xx/3xx responses plus socket errors.
wrk_failures() {
    awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$1"
}

# col CONFIG KEY: KEY of every run of CONFIG in $RUNS_FILE (one JSON object
# per run, with a "config" field), one value per line.
col() { jq -r --arg c "$1" "select(.config == \$c) | .$2 // empty" "$RUNS_FILE"; }

# ---------------------------------------------------------------- PostgreSQL --
# pg_admin SQL: one statement on the maintenance database (bounded), as
# $PG_USER@$PG_HOST:$PG_PORT with trust auth.
pg_admin() {
    PGCONNECT_TIMEOUT=5 timeout --kill-after=5 60 \
        psql -X -q -v ON_ERROR_STOP=1 -At -h "${PG_HOST:-127.0.0.1}" -p "${PG_PORT:-5432}" \
        -U "${PG_USER:-postgres}" -d postgres -c "$1"
}
# pg_xacts DB: committed + rolled back transactions of DB so far.
pg_xacts() { pg_admin "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$1'" 2>/dev/null || echo ""; }
pg_drop() { pg_admin "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null; }

# ---------------------------------------------------------------- build --
# build_release [EXAMPLE...]: one release build of what the script needs,
# then copies of the binaries into $WORK/bin (so a rebuild during the run
# cannot swap them): $SERVER_BIN and $WORK/bin/EXAMPLE.
#   BENCH_BUILT=1          the caller (bench/all.sh) already built: no cargo
#   BENCH_SERVER_BIN=PATH  measure that huntaze binary (e.g. an older
#                          commit's); examples still come from this tree
build_release() {
    local args=() e src
    [[ -z "${BENCH_SERVER_BIN:-}" ]] && args+=(--bin huntaze)
    for e in "$@"; do args+=(--example "$e"); done
    if [[ "${BENCH_BUILT:-0}" == 1 ]]; then
        log "BENCH_BUILT=1: using the release build in $TARGET_DIR"
    elif (( ${#args[@]} > 0 )); then
        need_cmd cargo
        log "cargo build --release ${args[*]}"
        cargo build --release "${args[@]}" >&2 || die "release build failed"
    fi
    mkdir -p "$WORK/bin"
    src="${BENCH_SERVER_BIN:-$TARGET_DIR/release/huntaze}"
    [[ -f "$src" && -x "$src" ]] || die "no huntaze binary at $src"
    cp "$src" "$WORK/bin/huntaze"
    SERVER_BIN="$WORK/bin/huntaze"
    [[ -n "${BENCH_SERVER_BIN:-}" ]] && log "measuring $BENCH_SERVER_BIN (BENCH_SERVER_BIN), not this tree's build"
    for e in "$@"; do
        src="$TARGET_DIR/release/examples/$e"
        [[ -x "$src" ]] || die "no example binary at $src"
        cp "$src" "$WORK/bin/$e"
    done
}

# ---------------------------------------------------------------- server --
# start_huntaze DIR PORT [VAR=VALUE...]: `huntaze serve` from $SERVER_BIN in
# DIR (so no huntaze.toml is found) on 127.0.0.1:PORT, fresh SQLite data in
# DIR, bench/empty.toml as its configuration, RUST_LOG=warn; VAR=VALUE
# settings come after these and override them. Output in DIR/server.log.
# Sets SERVER_PID. The benchmark lock's descriptor is not inherited.
start_huntaze() {
    local dir="$1" port="$2"; shift 2
    (
        cd "$dir" || exit 1
        exec env HUNTAZE_LISTEN="127.0.0.1:$port" \
            HUNTAZE_PUBLIC_URL="http://127.0.0.1:$port" \
            HUNTAZE_DATA_DIR="$dir" \
            HUNTAZE_CONFIG="$ROOT/bench/empty.toml" \
            RUST_LOG=warn \
            "$@" \
            "$SERVER_BIN" serve
    ) >"$dir/server.log" 2>&1 9>&- &
    SERVER_PID=$!
}

# stop_pid PID: TERM, up to 10 s for it to exit, then KILL.
stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=""; }

# peak_rss_kb PID: VmHWM, the highest resident set size so far.
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# server_errors LOG NAME: shows the first ERROR / panic lines of a log.
server_errors() {
    if grep -qiE '\b(ERROR|panicked)\b' "$1"; then
        log "  $2: the server logged errors:"; grep -iE '\b(ERROR|panicked)\b' "$1" | head -n 5 >&2
    fi
}

# ---------------------------------------------------------------- page --
# fetch_page BASE_URL DIR: huntaze's `/` into DIR as index.html (identity)
# and index.html.gz with its headers (gz.headers), the two checked to be
# the same page; sets CACHE_CONTROL (what nginx must send too) and
# GZIP_SHA (first 16 hex digits of the gzip body's SHA-256).
fetch_page() {
    local base="$1" dir="$2"
    mkdir -p "$dir"
    curl -sf --max-time 5 -H 'Accept-Encoding: identity' -o "$dir/index.html" "$base/" \
        || die "cannot fetch the identity page from huntaze at $base"
    curl -sf --max-time 5 -H 'Accept-Encoding: gzip' -D "$dir/gz.headers" -o "$dir/index.html.gz" "$base/" \
        || die "cannot fetch the gzip page from huntaze at $base"
    tr -d '\r' <"$dir/gz.headers" | grep -qi '^content-encoding: gzip$' || die "huntaze did not answer gzip to Accept-Encoding: gzip"
    gzip -dc <"$dir/index.html.gz" | cmp -s - "$dir/index.html" \
        || die "huntaze's gzip variant does not decompress to its identity body (page re-rendered between fetches? run again)"
    CACHE_CONTROL="$(tr -d '\r' <"$dir/gz.headers" | awk -F': ' 'tolower($1)=="cache-control" {print $2}')"
    [[ "$CACHE_CONTROL" =~ ^[[:alnum:][:space:]=,-]*$ ]] || die "unexpected Cache-Control from huntaze"
    # shellcheck disable=SC2034 # read by the scripts that call this
    GZIP_SHA=$(sha256sum "$dir/index.html.gz" | cut -c1-16)
}

# ---------------------------------------------------------------- nginx --
# nginx_headers_conf HEADERS_FILE OUT: the headers huntaze sent beside the
# body (its security policy: CSP, nosniff, referrer and opener policies,
# permissions, HSTS), as nginx add_header lines, plus a request id of
# nginx's own: an nginx serving the page in production would send them too.
nginx_headers_conf() {
    local line name value
    : >"$2"
    while IFS= read -r line; do
        name="${line%%:*}"; value="${line#*: }"
        case "${name,,}" in
            content-security-policy|x-content-type-options|referrer-policy|cross-origin-opener-policy|permissions-policy|strict-transport-security) ;;
            *) continue ;;
        esac
        # shellcheck disable=SC1003 # a literal backslash, which nginx would read as an escape
        [[ "$value" == *'"'* || "$value" == *'$'* || "$value" == *'\'* ]] && die "cannot quote $name for nginx"
        printf 'add_header %s "%s" always;\n' "$name" "$value" >>"$2"
    done < <(tr -d '\r' <"$1")
    grep -qi '^add_header content-security-policy ' "$2" \
        || die "huntaze's answer carried no Content-Security-Policy to copy"
    # shellcheck disable=SC2016 # $request_id is nginx's variable
    echo 'add_header X-Request-Id $request_id always;' >>"$2"
}

# ---------------------------------------------------------------- lock --
# bench_lock / bench_unlock: the lock every load-generating phase holds, so
# benchmarks never overlap. BENCH_LOCK is the file (default
# /tmp/huntaze-bench.lock; empty: none, e.g. under bench/all.sh, which holds
# it for its children), BENCH_LOCK_WAIT_S the longest wait (default 3600).
bench_lock() {
    local lock="${BENCH_LOCK-/tmp/huntaze-bench.lock}" wait_s="${BENCH_LOCK_WAIT_S:-3600}"
    [[ -z "$lock" ]] && return 0
    exec 9>>"$lock"
    flock -n 9 && return 0
    log "waiting for $lock (another benchmark is running; up to ${wait_s}s)"
    flock -w "$wait_s" 9 || die "another benchmark held $lock for ${wait_s}s"
}
bench_unlock() {
    [[ -z "${BENCH_LOCK-/tmp/huntaze-bench.lock}" ]] && return 0
    flock -u 9 2>/dev/null || true
}

# ---------------------------------------------------------------- results --
# git_state: COMMIT (short hash of HEAD) and DIRTY (true when `git status`
# shows any change outside bench/results/, untracked files included: they
# may be sources the build picked up).
git_state() {
    COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    DIRTY=false
    if [[ -n "$(git -C "$ROOT" status --porcelain -- . ':(exclude)bench/results' 2>/dev/null || true)" ]]; then
        DIRTY=true
    fi
}

# A baseline is what later runs are compared with: it must name a commit that
# reproduces it, and the server of that commit.
baseline_guard() {
    [[ "${BENCH_WRITE_BASELINE:-0}" == 1 ]] || return 0
    [[ -z "${BENCH_SERVER_BIN:-}" ]] \
        || die "BENCH_WRITE_BASELINE=1 refused: BENCH_SERVER_BIN is set, so the server measured is not this tree's commit"
    [[ $DIRTY == false ]] \
        || die "BENCH_WRITE_BASELINE=1 refused: the tree has uncommitted changes (git status), so no commit reproduces the figures"
}

# write_result SCENARIO JSON_FILE: adds what was measured (commit, dirty,
# server_bin: the BENCH_SERVER_BIN path or null) to the result, stores it as
# bench/results/SCENARIO-<UTC>.json (git-ignored), with BENCH_WRITE_BASELINE=1
# also as bench/results/baseline-SCENARIO.json (tracked), and prints
# "results: PATH" (bench/all.sh reads that line).
write_result() {
    local scenario="$1" src="$2" out stamp
    need_pkg jq jq
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$ROOT/bench/results"
    out="$ROOT/bench/results/$scenario-$stamp.json"
    jq --arg commit "$COMMIT" --argjson dirty "$DIRTY" --arg bin "${BENCH_SERVER_BIN:-}" \
        '. + {commit: $commit, dirty: $dirty, server_bin: (if $bin == "" then null else $bin end)}' \
        "$src" >"$out.tmp" || { rm -f "$out.tmp"; die "the results JSON is invalid"; }
    mv "$out.tmp" "$out"
    if [[ "${BENCH_WRITE_BASELINE:-0}" == 1 ]]; then
        baseline_guard
        cp "$out" "$ROOT/bench/results/baseline-$scenario.json"
        log "baseline: bench/results/baseline-$scenario.json (commit it)"
    fi
    printf 'results: %s\n' "${out#"$ROOT"/}"
}
