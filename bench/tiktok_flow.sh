#!/usr/bin/env bash
# Benchmark (not a test) of the TikTok connect flow against the standalone
# TikTok sandbox (`huntaze tiktok-sandbox`), on the release build.
#
#   bench/tiktok_flow.sh                                      # 200 flows, 16 workers x 10 s
#   BENCH_FLOWS=50 BENCH_DURATION=5s bench/tiktok_flow.sh     # quick look
#
# It builds the release binary, starts the sandbox and the server on
# loopback (fresh SQLite data dir, RUST_LOG=warn, registration and login
# limits raised so they never trigger, every other setting default; the
# server configured with the sandbox's client key/secret, authorize URL and
# API URL), then runs bench/tiktok_flow.py (Python 3 standard library),
# which measures:
#
#   1. latency: BENCH_FLOWS flows by one signed-in user, one at a time:
#      the GET of /api/auth/tiktok/callback (inside: consume the state,
#      token exchange + user info against the sandbox, seal the tokens,
#      write the connection and its audit row) and, interleaved, the same
#      two sandbox calls made directly by the load generator (a code from
#      its own authorize + decision with its own PKCE verifier, then
#      POST /v2/oauth/token/ and GET /v2/user/info/). Overhead = callback
#      p50 - direct p50 (and the median of the per-flow differences).
#   2. throughput: BENCH_WORKERS users (one process each, registered once)
#      run complete flows (start 302 -> authorize page -> decision 303 ->
#      callback 302 to ?status=connected) in a loop for BENCH_DURATION;
#      flows/s counts only flows ending in status=connected within the
#      window; failures are counted by kind. CPU seconds of the server,
#      the sandbox and the load generator during the window are reported.
#
# A table is printed; the same figures go to bench/results/tiktok_flow-<UTC>.json.
#
# Environment:
#   BENCH_FLOWS      flows of the latency part (default 200)
#   BENCH_WARMUP     unmeasured flows before them (default 10)
#   BENCH_WORKERS    concurrent users of the throughput part (default 16)
#   BENCH_DURATION   throughput window (10, 10s, 1m; default 10s)
#
# Traffic goes to 127.0.0.1 only. Any HUNTAZE_* variable of the caller's
# environment is ignored so runs are comparable; a huntaze.toml is not read.
# The load generator (Python), the server and the sandbox share the CPU:
# compare between runs of this script, not across machines.
set -euo pipefail

FLOWS="${BENCH_FLOWS:-200}"
WARMUP="${BENCH_WARMUP:-10}"
WORKERS="${BENCH_WORKERS:-16}"
DURATION="${BENCH_DURATION:-10s}"
READY_DEADLINE_S=60
HIGH_LIMIT=100000000

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/huntaze"
DRIVER="$ROOT/bench/tiktok_flow.py"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

[[ "$FLOWS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_FLOWS must be a positive integer"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a non-negative integer"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_WORKERS must be a positive integer"
(( WORKERS <= 256 )) || die "BENCH_WORKERS is capped at 256"

# Seconds of a duration (10, 10s, 2m, 1h).
duration_secs() {
    local d="$1"
    [[ "$d" =~ ^[0-9]+[smh]?$ ]] || return 1
    case "$d" in
        *h) echo $(( ${d%h} * 3600 )) ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *s) echo $(( ${d%s} )) ;;
        *)  echo $(( d )) ;;
    esac
}
DURATION_S="$(duration_secs "$DURATION")" || die "BENCH_DURATION must look like 10s, 2m or 1h"
(( DURATION_S > 0 )) || die "BENCH_DURATION must be positive"

# Ignore the caller's server configuration.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^HUNTAZE_' || true)

# ---------------------------------------------------------------- cleanup --
WORK="$(mktemp -d -t huntaze-bench.XXXXXX)"
SERVER_PID=""
SANDBOX_PID=""
DRIVER_PID=""
stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    # The driver's worker processes are in its process group (set -m below).
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM -- "-$DRIVER_PID" 2>/dev/null || kill -TERM "$DRIVER_PID" 2>/dev/null || true
        wait "$DRIVER_PID" 2>/dev/null || true
    fi
    stop_pid "$SERVER_PID"
    stop_pid "$SANDBOX_PID"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools --
command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
command -v curl >/dev/null || die "curl is not installed"
command -v python3 >/dev/null || die "python3 is not installed"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "python3 >= 3.8 is needed"
[[ -r /proc/self/stat ]] || die "/proc is needed to read CPU times"

# ---------------------------------------------------------------- build --
log "cargo build --release --bin huntaze"
cargo build --release --bin huntaze >&2 || die "release build failed"
[[ -x "$BIN" ]] || die "no binary at $BIN"

# ---------------------------------------------------------------- helpers --
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

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" 2>/dev/null || true; }

# wait_ready PID URL LOG NAME: polls URL every 5 ms until 200 (bounded).
wait_ready() {
    local pid="$1" url="$2" logf="$3" name="$4" deadline=$(( $(date +%s) + READY_DEADLINE_S ))
    while :; do
        [[ "$(http_code "$url")" == 200 ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logf" >&2 || true
            die "$name exited before it was ready"
        fi
        if (( $(date +%s) >= deadline )); then
            tail -n 20 "$logf" >&2 || true
            die "$name not ready after ${READY_DEADLINE_S}s"
        fi
        sleep 0.005
    done
}

# ---------------------------------------------------------------- start --
DATA="$(mktemp -d "$WORK/data.XXXXXX")"
SBPORT="$(free_port)" || die "no free port"
PORT="$(free_port)" || die "no free port"
[[ "$PORT" != "$SBPORT" ]] || PORT="$(free_port)" || die "no free port"
BASE="http://127.0.0.1:$PORT"
SANDBOX="http://127.0.0.1:$SBPORT"

log "starting the TikTok sandbox on $SANDBOX"
(
    cd "$DATA"
    exec env HUNTAZE_CONFIG="$ROOT/bench/empty.toml" RUST_LOG=warn \
        "$BIN" tiktok-sandbox --listen "127.0.0.1:$SBPORT" \
            --redirect-uri "$BASE/api/auth/tiktok/callback"
) >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
wait_ready "$SANDBOX_PID" "$SANDBOX/sandbox/avatar.png" "$WORK/sandbox.log" "the sandbox"

log "starting the server on $BASE (TikTok: the sandbox)"
(
    cd "$DATA"
    exec env HUNTAZE_LISTEN="127.0.0.1:$PORT" \
        HUNTAZE_PUBLIC_URL="$BASE" \
        HUNTAZE_DATA_DIR="$DATA" \
        HUNTAZE_CONFIG="$ROOT/bench/empty.toml" \
        HUNTAZE_REGISTER_PER_IP_PER_MINUTE="$HIGH_LIMIT" \
        HUNTAZE_LOGIN_PER_IP_PER_MINUTE="$HIGH_LIMIT" \
        HUNTAZE_TIKTOK_CLIENT_KEY=sandbox-client-key \
        HUNTAZE_TIKTOK_CLIENT_SECRET=sandbox-client-secret \
        HUNTAZE_TIKTOK_AUTH_URL="$SANDBOX/v2/auth/authorize/" \
        HUNTAZE_TIKTOK_API_URL="$SANDBOX" \
        RUST_LOG=warn \
        "$BIN" serve
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_ready "$SERVER_PID" "$BASE/readyz" "$WORK/server.log" "the server"

# ---------------------------------------------------------------- run --
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]] && DIRTY=true
NPROC="$(nproc)"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
PYV="$(python3 -c 'import platform; print(platform.python_version())')"
META="$(printf '{"benchmark": "tiktok_flow", "timestamp": "%s", "commit": "%s", "dirty": %s, "nproc": %s, "python": "%s", "server": {"profile": "release", "rust_log": "warn", "database": "sqlite (fresh data dir)", "tiktok": "standalone sandbox (huntaze tiktok-sandbox), loopback", "register_and_login_limits": %s, "other_settings": "default"}}' \
    "$NOW" "$COMMIT" "$DIRTY" "$NPROC" "$PYV" "$HIGH_LIMIT")"

mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/tiktok_flow-$STAMP.json"
# Bounded: registration + latency flows + the window, with a generous margin.
LIMIT_S=$(( 300 + FLOWS + WARMUP + DURATION_S + WORKERS * 5 ))
set -m # the driver and its worker processes get their own process group
timeout --kill-after=10 "$LIMIT_S" python3 "$DRIVER" \
    --base "$BASE" --sandbox "$SANDBOX" \
    --flows "$FLOWS" --warmup "$WARMUP" --workers "$WORKERS" --duration "$DURATION_S" \
    --server-pid "$SERVER_PID" --sandbox-pid "$SANDBOX_PID" \
    --meta "$META" --out "$OUT" &
DRIVER_PID=$!
set +m
rc=0
wait "$DRIVER_PID" || rc=$?
DRIVER_PID=""
if (( rc != 0 )); then
    tail -n 20 "$WORK/server.log" >&2 || true
    die "the load generator failed (exit $rc)"
fi

kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$WORK/server.log" >&2; die "the server died during the run"; }
kill -0 "$SANDBOX_PID" 2>/dev/null || { tail -n 20 "$WORK/sandbox.log" >&2; die "the sandbox died during the run"; }
if grep -qiE '\b(ERROR|panicked)\b' "$WORK/server.log"; then
    log "the server logged errors:"; grep -iE '\b(ERROR|panicked)\b' "$WORK/server.log" | head -n 5 >&2
fi
WARNINGS="$(grep -ciE '\bWARN\b' "$WORK/server.log" || true)"
(( WARNINGS > 0 )) && log "the server logged $WARNINGS warning line(s), e.g.: $(grep -iE '\bWARN\b' "$WORK/server.log" | head -n 1)"
printf 'results: %s\n' "${OUT#"$ROOT"/}"
