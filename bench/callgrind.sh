#!/usr/bin/env bash
# Profile (not a test): user-space instructions per request, counted by
# valgrind's callgrind, so the figure repeats whatever else the machine does.
#
#   bench/callgrind.sh                  # /, /api/health and the floor's /
#   BENCH_REQUESTS=5000 bench/callgrind.sh
#   BENCH_KEEP=1 bench/callgrind.sh     # keep the callgrind.out files
#
# Each target runs under `valgrind --tool=callgrind --instr-atstart=no`
# (uninstrumented, so start-up is quick): BENCH_WARMUP requests first, then
# instrumentation is switched on (callgrind_control -i on) for exactly BENCH_REQUESTS requests over 4
# keep-alive connections (bench/drive.py, `Accept-Encoding: gzip`), then dumped and off.
# Instructions per request = collected Ir / requests; the top functions by
# inclusive cost are printed for each target (callgrind_annotate). Targets:
#   huntaze /            the release binary, fresh SQLite dir, RUST_LOG=warn
#   huntaze /api/health  the same server, anonymous
#   floor /              examples/floor.rs serving the same gzip bytes
# JSON in bench/results/callgrind-<UTC>.json. Needs valgrind and python3.
# Instruction counts do not depend on other load, so this script takes no
# lock. The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE): bench/README.md.
set -euo pipefail
BENCH_NAME=callgrind
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

REQUESTS="${BENCH_REQUESTS:-20000}"
WARMUP="${BENCH_WARMUP:-2000}"
KEEP="${BENCH_KEEP:-0}"
TOP="${BENCH_TOP:-25}"

positive_int BENCH_REQUESTS "$REQUESTS"

bench_init
PIDS=()
on_exit() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ "$KEEP" == 1 ]] && KEEP_WORK=true
    return 0
}
need_pkg valgrind valgrind
need_pkg python3 python3
need_pkg jq jq
build_release floor

# profile NAME PORT PATH [HEADER...]: drives the already started process
# (last of PIDS) and prints its instructions per request.
profile() {
    local name="$1" port="$2" path="$3"; shift 3
    local pid="${PIDS[-1]}"
    python3 bench/drive.py "$port" "$path" "$WARMUP" 4 'Accept-Encoding: gzip' "$@" \
        || die "$name: warm-up failed"
    callgrind_control -i on "$pid" >/dev/null
    python3 bench/drive.py "$port" "$path" "$REQUESTS" 4 'Accept-Encoding: gzip' "$@" \
        || die "$name: run failed"
    # Dump (which also zeroes the counters) while still instrumented: an
    # uninstrumented, idle process does not look at its command file.
    callgrind_control -d "${name//[^A-Za-z0-9]/_}" "$pid" >/dev/null
    callgrind_control -i off "$pid" >/dev/null
    local out="$WORK/callgrind.out.$pid.1"
    for _ in $(seq 1 600); do [[ -s "$out" ]] && grep -q '^totals:' "$out" && break; sleep 0.1; done
    local flat="$WORK/annotate.${name//[^A-Za-z0-9]/_}.flat"
    local inclusive="$WORK/annotate.${name//[^A-Za-z0-9]/_}.inclusive"
    callgrind_annotate "$out" >"$flat" 2>/dev/null || die "$name: callgrind_annotate failed"
    callgrind_annotate --inclusive=yes --threshold=100 "$out" >"$inclusive" 2>/dev/null \
        || die "$name: callgrind_annotate failed"
    local ir
    ir="$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$flat")"
    [[ -n "$ir" ]] || die "$name: no totals in $out"
    local per=$(( ir / REQUESTS ))
    printf '%s\t%s\n' "$name" "$per" >>"$WORK/results.tsv"
    {
        echo "== $name: $per instructions per request (inclusive, per request) =="
        awk -v n="$REQUESTS" -v top="$TOP" '/file:function/ {on=1; next}
            on && NF && shown < top {v=$1; gsub(",", "", v); $1=""; printf "%8d %s\n", v/n, $0; shown++}' \
            "$inclusive"
    } >&2
}

start() { # start DIR [VAR=VALUE...] COMMAND...: under callgrind, output in DIR
    local dir="$1"; shift
    local vars=()
    while [[ "$1" == *=* ]]; do vars+=("$1"); shift; done
    # env before valgrind: valgrind does not follow an exec by default.
    (cd "$dir" && exec env "${vars[@]}" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$WORK/callgrind.out.%p" "$@") >"$dir/log" 2>&1 &
    PIDS+=("$!")
}

stop_last() { # stops the last started process (one profile per process:
    # toggling instrumentation off and on again confuses callgrind's totals)
    local pid="${PIDS[-1]}"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

# huntaze NAME PATH: a fresh server under callgrind, profiled on PATH.
huntaze() {
    local dir port
    dir="$(mktemp -d "$WORK/huntaze.XXXXXX")"
    port="$(free_port)"
    start "$dir" HUNTAZE_LISTEN="127.0.0.1:$port" HUNTAZE_PUBLIC_URL="http://127.0.0.1:$port" \
        HUNTAZE_DATA_DIR="$dir" HUNTAZE_CONFIG="$ROOT/bench/empty.toml" RUST_LOG=warn "$SERVER_BIN" serve
    wait_http "http://127.0.0.1:$port/readyz" 120 || { tail "$dir/log" >&2; die "huntaze not ready"; }
    if [[ ! -s "$WORK/index.html.gz" ]]; then
        curl -sf -H 'Accept-Encoding: identity' -o "$WORK/index.html" "http://127.0.0.1:$port/"
        curl -sf -H 'Accept-Encoding: gzip' -o "$WORK/index.html.gz" "http://127.0.0.1:$port/"
    fi
    profile "$1" "$port" "$2"
    stop_last
}

huntaze "huntaze /" /
huntaze "huntaze /api/health" /api/health

FL="$(mktemp -d "$WORK/floor.XXXXXX")"
FL_PORT="$(free_port)"
start "$FL" "$WORK/bin/floor" --listen "127.0.0.1:$FL_PORT" --file "$WORK/index.html" --gzip-file "$WORK/index.html.gz"
wait_http "http://127.0.0.1:$FL_PORT/" 120 || { tail "$FL/log" >&2; die "floor not ready"; }
profile "floor /" "$FL_PORT" /
stop_last

jq -Rn --argjson requests "$REQUESTS" '
  {benchmark: "callgrind", requests: $requests,
   instructions_per_request: ([inputs | split("\t") | {(.[0]): (.[1] | tonumber)}] | add)}' \
  <"$WORK/results.tsv" >"$WORK/result.json"
echo
printf '%-22s %12s\n' target "instr/request"
while IFS=$'\t' read -r name per; do printf '%-22s %12s\n' "$name" "$per"; done <"$WORK/results.tsv"
write_result callgrind "$WORK/result.json"
if [[ "$KEEP" == 1 ]]; then log "callgrind outputs kept in $WORK"; fi
