#!/usr/bin/env bash
# The whole benchmark harness in one command: the landing page against
# nginx and the bare axum floor, the health endpoints, a session-backed
# database read on SQLite and PostgreSQL with and without the query cache,
# and login against the raw Argon2 rate — then one table of the figures,
# the targets and each run's peak RSS, and one JSON for comparing commits.
#
#   bench/all.sh                                   # ~30 min on 2 cores
#   BENCH_DURATION=5s BENCH_ROUNDS=3 bench/all.sh  # ~12 min
#
# It runs, one after the other under the benchmark lock (so nothing else
# that generates load overlaps them):
#   bench/compare.sh  `/` huntaze vs nginx (same bytes, gzip_static) vs floor,
#                     interleaved; /api/health anonymous and detailed; a
#                     fixed 10,000 req/s run (oha -q); start to /readyz;
#                     huntaze's peak RSS
#   bench/db_read.sh  GET /api/auth/session, SQLite / PostgreSQL x cache
#                     on / off, interleaved; peak RSS of each run's server
#   bench/login.sh    login req/s against parallel Argon2id verifies/s;
#                     `/` p99 alone and during a login flood; peak RSS
# Each writes its own JSON under bench/results/ as well; this script reads
# them back, prints one table and writes bench/results/all-<UTC>.json
# holding the summary and the three results whole.
#
# It builds once (the server and the examples floor and hash_rate) and runs
# the three with BENCH_BUILT=1, so all three measure the same binaries.
# Comparing two commits in one sitting: BENCH_SERVER_BIN (bench/README.md).
#
# Settings: BENCH_DURATION and BENCH_ROUNDS are handed to all three (their
# defaults: 10s; 5 rounds for compare.sh here, 3 for db_read.sh). Anything
# else each script reads (BENCH_RATE, BENCH_PG_PORT, BENCH_SERVER_BIN,
# BENCH_WRITE_BASELINE, ...) passes through. Needs what they need (wrk, oha,
# nginx, jq, curl, psql for the PostgreSQL rows; the scripts install the
# Debian packages they miss) and python3.
set -euo pipefail
BENCH_NAME=all
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_init

need_pkg python3 python3
build_release floor hash_rate
export BENCH_BUILT=1

bench_lock

# run NAME SCRIPT [ENV...]: runs a script, shows its output, and records
# the path of the JSON it wrote (its last "results: " line).
declare -A RESULT
run() {
    local name="$1" script="$2"; shift 2
    log "== $script"
    env "$@" BENCH_LOCK= bash "$script" | tee "$WORK/$name.out"
    local path
    path="$(sed -n 's/^results: //p' "$WORK/$name.out" | tail -n 1)"
    [[ -n "$path" && -f "$path" ]] || die "$script wrote no results file"
    RESULT[$name]="$path"
}

run compare bench/compare.sh "BENCH_ROUNDS=${BENCH_ROUNDS:-5}"
run db_read bench/db_read.sh "BENCH_ROUNDS=${BENCH_ROUNDS:-3}"
run login bench/login.sh

bench_unlock
OUT="$WORK/result.json"
BENCH_COMMIT="$COMMIT" BENCH_DIRTY="$DIRTY" \
    python3 - "${RESULT[compare]}" "${RESULT[db_read]}" "${RESULT[login]}" "$OUT" <<'PY'
import json
import os
import sys

compare_path, db_path, login_path, out_path = sys.argv[1:5]
compare = json.load(open(compare_path))
db = json.load(open(db_path))
login = json.load(open(login_path))

rows = []  # (area, figure, value, target, met)


def row(area, figure, value, target="", met=None):
    rows.append({"area": area, "figure": figure, "value": value, "target": target, "met": met})


def mb(kb):
    return None if kb is None else round(kb / 1024, 1)


t = compare["targets"]
r = compare["ratios"]
fr = compare["fixed_rate"]
row("/", "huntaze req/s (median)", t["huntaze"]["rps_median"])
row("/", "nginx req/s, same headers", t["nginx"]["rps_median"])
row("/", "bare axum floor req/s", t["floor"]["rps_median"])
row("/", "huntaze / nginx req/s", r["huntaze_over_nginx"], ">= 1.0", r["huntaze_over_nginx"] >= 1.0)
row("/", "huntaze / bare nginx req/s", r["huntaze_over_nginx_bare"], "reference")
row("/", "huntaze / floor req/s", r["huntaze_over_floor"], ">= 0.8", r["huntaze_over_floor"] >= 0.8)
if fr.get("skipped"):
    row("/", "fixed-rate p99", "skipped: " + str(fr["skipped"]), "<= nginx", False)
else:
    h, n = fr["huntaze"]["p99_ms_median"], fr["nginx"]["p99_ms_median"]
    rate = fr["huntaze"].get("offered_rps", "fixed")
    row("/", f"p99 at {rate} req/s huntaze vs nginx (ms)", f"{h} vs {n}", "<= nginx", h <= n)
row("/api/health", "anonymous / landing req/s", r["health_anon_over_landing"], ">= 0.8",
    r["health_anon_over_landing"] >= 0.8)
row("/api/health", "detailed / landing req/s", r["health_detailed_over_landing"], ">= 0.8",
    r["health_detailed_over_landing"] >= 0.8)
ready = compare["huntaze"]["start_to_ready_ms"]["median"]
row("start", "process start to /readyz 200 (ms, SQLite)", ready, "<= 300", ready <= 300)

for c in db["configs"]:
    row("db read", f"{c['config']} req/s (p99 {c['median_p99_ms']} ms)", c["median_rps"])
for backend, v in db["ratios"]["rps_cache_on_over_off"].items():
    if v is not None:
        row("db read", f"{backend}: cache on / off req/s", v)
if not db.get("postgres_ran"):
    row("db read", "PostgreSQL rows", "skipped: " + str(db.get("postgres_skipped_reason")))

login_run = next((x for x in login["runs"] if x["name"] == "login"), None)
verifies = login["hash_rate"]["parallel"]["verifies_per_s"]
if login_run:
    row("login", "login req/s vs raw parallel verifies/s", f"{login_run['rps']} vs {verifies}")
row("login", "login / raw Argon2id verify rate", login["login_rps_over_parallel_verifies_per_s"])
lp = login["landing_p99_ms"]
row("login", "/ p99 alone -> during a login flood (ms)", f"{lp['alone']} -> {lp['during_login_flood']}")

# Peak RSS of every server measured, and non-2xx over every run.
peaks = {"compare (huntaze, all its runs)": compare["huntaze"]["peak_rss_kb"]}
for c in db["configs"]:
    peaks[f"db read {c['config']} (highest run)"] = c.get("max_peak_rss_kb")
for name, kb in peaks.items():
    if kb is not None:
        row("memory", f"peak RSS {name} (MB)", mb(kb), "<= 48", mb(kb) <= 48)
# Each Argon2id hash holds its memory cost (19 MiB by default) while it
# runs, `password_hash_concurrency` (nproc) of them at once, by design:
# the login server's peak is reported, not held to 48 MB.
argon = login["server"]["argon2"]
if login.get("peak_rss_kb") is not None:
    row("memory", f"peak RSS login (MB; Argon2id m={argon['memory_kib']} KiB per hash)",
        mb(login["peak_rss_kb"]), "reference")

non2xx = {
    "compare": sum(v.get("non_2xx", 0) for k, v in t.items() if isinstance(v, dict))
    + sum(v.get("non_2xx", 0) for k, v in fr.items() if isinstance(v, dict)),
    "db read": sum(c["non_2xx_total"] for c in db["configs"]),
    # Login under its flood may shed by design (hash queue full); counted apart.
    "login (all but the login flood)": sum(x["non_2xx"] for x in login["runs"] if x["name"] != "login-flood"),
}
for name, n in non2xx.items():
    row("errors", f"non-2xx, {name}", n, "0", n == 0)

commit = os.environ["BENCH_COMMIT"]
dirty = os.environ["BENCH_DIRTY"] == "true"
server_bin = os.environ.get("BENCH_SERVER_BIN") or None
print()
print(f"Huntaze benchmarks  commit {commit}{' (dirty)' if dirty else ''}"
      + (f"  server {server_bin} (BENCH_SERVER_BIN)" if server_bin else "")
      + f"  nproc {compare['nproc']}  {compare['timestamp']}")
print(f"{'area':<12} {'figure':<52} {'value':>22} {'target':>10}  met")
for x in rows:
    met = "" if x["met"] is None else ("ok" if x["met"] else "MISSED")
    print(f"{x['area']:<12} {x['figure']:<52} {str(x['value']):>22} {x['target']:>10}  {met}")
targets = [x for x in rows if x["met"] is not None]
missed = [x for x in targets if not x["met"]]
print(f"\ntargets met: {len(targets) - len(missed)} of {len(targets)}"
      + ("" if not missed else "; missed: " + ", ".join(x["figure"] for x in missed)))

summary = {
    "benchmark": "all",
    "timestamp": compare["timestamp"],
    "nproc": compare["nproc"],
    "rows": rows,
    "targets_met": len(missed) == 0,
    "sources": {"compare": compare_path, "db_read": db_path, "login": login_path},
    "results": {"compare": compare, "db_read": db, "login": login},
}
with open(out_path, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
PY
write_result all "$OUT"
