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
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=tiktok_flow
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

FLOWS="${BENCH_FLOWS:-200}"
WARMUP="${BENCH_WARMUP:-10}"
WORKERS="${BENCH_WORKERS:-16}"
DURATION="${BENCH_DURATION:-10s}"
HIGH_LIMIT=100000000
DRIVER="$ROOT/bench/tiktok_flow.py"

positive_int BENCH_FLOWS "$FLOWS"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a non-negative integer"
positive_int BENCH_WORKERS "$WORKERS"
(( WORKERS <= 256 )) || die "BENCH_WORKERS is capped at 256"
DURATION_S="$(duration_secs "$DURATION")"

# ---------------------------------------------------------------- cleanup --
bench_init
SANDBOX_PID=""
DRIVER_PID=""
on_exit() {
    # The driver's worker processes are in its process group (set -m below).
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM -- "-$DRIVER_PID" 2>/dev/null || kill -TERM "$DRIVER_PID" 2>/dev/null || true
        wait "$DRIVER_PID" 2>/dev/null || true
    fi
    stop_server
    stop_pid "$SANDBOX_PID"
}

# ---------------------------------------------------------------- tools --
need_cmd curl python3
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "python3 >= 3.8 is needed"
[[ -r /proc/self/stat ]] || die "/proc is needed to read CPU times"
need_pkg jq jq

# ---------------------------------------------------------------- build --
build_release
bench_lock

# ---------------------------------------------------------------- start --
DATA="$(mktemp -d "$WORK/data.XXXXXX")"
SBPORT="$(free_port)"
PORT="$(free_port "$SBPORT")"
BASE="http://127.0.0.1:$PORT"
SANDBOX="http://127.0.0.1:$SBPORT"

log "starting the TikTok sandbox on $SANDBOX"
(
    cd "$DATA"
    exec env HUNTAZE_CONFIG="$ROOT/bench/empty.toml" RUST_LOG=warn \
        "$SERVER_BIN" tiktok-sandbox --listen "127.0.0.1:$SBPORT" \
            --redirect-uri "$BASE/api/auth/tiktok/callback"
) >"$WORK/sandbox.log" 2>&1 9>&- &
SANDBOX_PID=$!
wait_ready "$SANDBOX/sandbox/avatar.png" "$SANDBOX_PID" "$WORK/sandbox.log" "the sandbox"

log "starting the server on $BASE (TikTok: the sandbox)"
start_huntaze "$DATA" "$PORT" \
    HUNTAZE_REGISTER_PER_IP_PER_MINUTE="$HIGH_LIMIT" \
    HUNTAZE_LOGIN_PER_IP_PER_MINUTE="$HIGH_LIMIT" \
    HUNTAZE_TIKTOK_CLIENT_KEY=sandbox-client-key \
    HUNTAZE_TIKTOK_CLIENT_SECRET=sandbox-client-secret \
    HUNTAZE_TIKTOK_AUTH_URL="$SANDBOX/v2/auth/authorize/" \
    HUNTAZE_TIKTOK_API_URL="$SANDBOX"
wait_ready "$BASE/readyz" "$SERVER_PID" "$DATA/server.log" "the server"

# ---------------------------------------------------------------- run --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
PYV="$(python3 -c 'import platform; print(platform.python_version())')"
META="$(printf '{"benchmark": "tiktok_flow", "timestamp": "%s", "commit": "%s", "dirty": %s, "nproc": %s, "python": "%s", "server": {"profile": "release", "rust_log": "warn", "database": "sqlite (fresh data dir)", "tiktok": "standalone sandbox (huntaze tiktok-sandbox), loopback", "register_and_login_limits": %s, "other_settings": "default"}}' \
    "$NOW" "$COMMIT" "$DIRTY" "$NPROC" "$PYV" "$HIGH_LIMIT")"

OUT="$WORK/result.json"
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
    tail -n 20 "$DATA/server.log" >&2 || true
    die "the load generator failed (exit $rc)"
fi

kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$DATA/server.log" >&2; die "the server died during the run"; }
kill -0 "$SANDBOX_PID" 2>/dev/null || { tail -n 20 "$WORK/sandbox.log" >&2; die "the sandbox died during the run"; }
server_errors "$DATA/server.log" "the server"
WARNINGS="$(grep -ciE '\bWARN\b' "$DATA/server.log" || true)"
(( WARNINGS > 0 )) && log "the server logged $WARNINGS warning line(s), e.g.: $(grep -iE '\bWARN\b' "$DATA/server.log" | head -n 1)"
bench_unlock
write_result tiktok_flow "$OUT"
