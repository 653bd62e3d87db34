# Shared helpers for the bench/*.sh scripts (sourced, not run). New scripts
# use these; the older ones still carry their own copies (see bench/README.md).

log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 1; }

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# need_pkg COMMAND PACKAGE: installs the Debian package when the command is
# missing, without letting its post-install start a system service.
need_pkg() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    local created=false
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        created=true
    fi
    as_root apt-get install -y "$2" >/dev/null 2>&1 \
        || { as_root apt-get update >/dev/null 2>&1 && as_root apt-get install -y "$2" >/dev/null 2>&1; } \
        || { $created && as_root rm -f /usr/sbin/policy-rc.d; die "cannot install $2"; }
    $created && as_root rm -f /usr/sbin/policy-rc.d
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed"
}

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

# wait_http URL DEADLINE_S: until URL answers 200.
wait_http() {
    local url="$1" deadline=$(( $(date +%s) + ${2:-60} ))
    until [[ "$(http_code "$url")" == 200 ]]; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.02
    done
}

median() { sort -g | awk '{a[NR]=$1 ""} END {if (NR==0) exit 1; if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# wrk_rps OUTPUT_FILE: requests/s from wrk's summary.
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
# wrk_non2xx OUTPUT_FILE: non-2xx/3xx responses plus socket errors.
wrk_failures() {
    awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$1"
}

pg_admin() { # pg_admin SQL (on the postgres database)
    PGCONNECT_TIMEOUT=5 timeout --kill-after=5 60 \
        psql -X -q -v ON_ERROR_STOP=1 -At -h "${PG_HOST:-127.0.0.1}" -p "${PG_PORT:-5432}" \
        -U "${PG_USER:-postgres}" -d postgres -c "$1"
}

# The lock every load-generating script holds, so benchmarks never overlap.
bench_lock() {
    local lock="${BENCH_LOCK-/tmp/huntaze-bench.lock}"
    [[ -z "$lock" ]] && return 0
    exec 9>"$lock"
    flock -w "${BENCH_LOCK_WAIT_S:-3600}" 9 || die "another benchmark holds $lock"
}
