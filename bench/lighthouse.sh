#!/usr/bin/env bash
# Benchmark (not a test): Lighthouse scores of three pages of the release server.
#
#   bench/lighthouse.sh
#   BENCH_KEEP_REPORTS=1 bench/lighthouse.sh   # keep the full Lighthouse reports
#
# It builds the release binary, starts it on a fresh SQLite data dir
# (RUST_LOG=warn, every setting default), registers one user with curl to get
# a `huntaze_session` cookie, and runs Lighthouse 12.2.3 (mobile emulation,
# Lighthouse's default form factor and simulated throttling) on:
#   /                           anonymous
#   /login                      anonymous
#   /platforms/connect/tiktok   signed in (Cookie passed with --extra-headers)
# for the categories performance, accessibility, best-practices and seo.
# It prints a table of the 12 scores and writes bench/results/lighthouse-<UTC>.json
# with the scores and, per page and category, the audits scoring below 1
# (id, title, score, weight, displayValue).
#
# Lighthouse is installed with npm into bench/.lighthouse/ (gitignored; set
# BENCH_LIGHTHOUSE_DIR to use another directory); it never downloads a
# browser: it drives Debian's chromium (/usr/bin/chromium, installed with
# apt-get if missing; CHROME_PATH overrides it).
#
# Environment:
#   BENCH_LIGHTHOUSE_DIR  npm prefix for Lighthouse (default bench/.lighthouse)
#   BENCH_KEEP_REPORTS    1: keep the full JSON reports (path printed at the end)
#   BENCH_ATTEMPTS        Lighthouse runs per page before giving up (default 3;
#                         a runtime error such as NO_NAVSTART is retried)
#   CHROME_PATH           browser binary (default /usr/bin/chromium)
#
# Each Lighthouse run holds the benchmark lock (BENCH_LOCK, see
# bench/README.md) so it never overlaps another benchmark. Traffic goes to 127.0.0.1 only. Any HUNTAZE_*
# variable of the caller's environment is ignored; a huntaze.toml is not read.
#
# The settings every script reads (BENCH_SERVER_BIN, BENCH_BUILT,
# BENCH_WRITE_BASELINE, BENCH_LOCK, BENCH_LOCK_WAIT_S): bench/README.md.
set -euo pipefail
BENCH_NAME=lighthouse
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

LH_VERSION=12.2.3
LH_DIR="${BENCH_LIGHTHOUSE_DIR:-$ROOT/bench/.lighthouse}"
KEEP_REPORTS="${BENCH_KEEP_REPORTS:-0}"
ATTEMPTS="${BENCH_ATTEMPTS:-3}"
LH_TIMEOUT_S=300
export CHROME_PATH="${CHROME_PATH:-/usr/bin/chromium}"
CHROME_FLAGS="--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking --disable-component-update --disable-sync --no-first-run"
CATEGORIES=performance,accessibility,best-practices,seo
positive_int BENCH_ATTEMPTS "$ATTEMPTS"

# ---------------------------------------------------------------- cleanup --
bench_init
REPORTS="$WORK/reports"
mkdir -p "$REPORTS"
on_exit() {
    stop_server
    if [[ "$KEEP_REPORTS" == 1 ]]; then
        KEEP_WORK=true
        rm -rf "${WORK:?}/data" "${WORK:?}/bin"
        log "full Lighthouse reports kept in $REPORTS"
    fi
}

# ---------------------------------------------------------------- tools --
if [[ ! -x "$CHROME_PATH" ]]; then
    [[ "$CHROME_PATH" == /usr/bin/chromium ]] || die "CHROME_PATH=$CHROME_PATH is not executable"
    need_pkg chromium chromium
fi
need_cmd curl node npm flock timeout

LH="$LH_DIR/node_modules/.bin/lighthouse"
if [[ ! -x "$LH" ]] || [[ "$("$LH" --version 2>/dev/null)" != "$LH_VERSION" ]]; then
    log "installing lighthouse@$LH_VERSION into $LH_DIR (npm; no browser download)"
    mkdir -p "$LH_DIR"
    PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$LH_DIR" --save-exact --no-audit --no-fund \
        --loglevel=error "lighthouse@$LH_VERSION" >&2 || die "npm install lighthouse@$LH_VERSION failed"
fi
[[ "$("$LH" --version)" == "$LH_VERSION" ]] || die "lighthouse $LH_VERSION not found in $LH_DIR"
CHROME_VERSION="$("$CHROME_PATH" --version 2>/dev/null | head -n 1 || true)"

# ---------------------------------------------------------------- build --
build_release

# ---------------------------------------------------------------- server --
DATA="$WORK/data"
mkdir -p "$DATA"
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
log "starting the release server on $BASE"
start_huntaze "$DATA" "$PORT"
wait_ready "$BASE/readyz" "$SERVER_PID" "$DATA/server.log" "the server"

# ---------------------------------------------------------------- session --
log "registering lh@example.com"
code="$(curl -s -o "$WORK/register.json" -D "$WORK/register.hdr" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' \
    --data '{"email":"lh@example.com","password":"correct horse battery"}' \
    "$BASE/api/auth/register" || true)"
[[ "$code" =~ ^2 ]] || { cat "$WORK/register.json" >&2 || true; die "register answered $code"; }
SESSION="$(tr -d '\r' <"$WORK/register.hdr" \
    | sed -n 's/^[Ss]et-[Cc]ookie: *huntaze_session=\([^;]*\).*/\1/p' | head -n 1)"
[[ -n "$SESSION" ]] || die "no huntaze_session cookie in the register answer"
COOKIE_HEADERS="$(printf '{"Cookie":"huntaze_session=%s"}' "$SESSION")"
code="$(http_code --max-time 2 -H "Cookie: huntaze_session=$SESSION" "$BASE/platforms/connect/tiktok")"
[[ "$code" == 200 ]] || die "/platforms/connect/tiktok answered $code with the session cookie"

# ---------------------------------------------------------------- lighthouse --
# name|path|signed in (1/0)
PAGES=(
    "landing|/|0"
    "login|/login|0"
    "connect-tiktok|/platforms/connect/tiktok|1"
)
ATTEMPTS_USED=()
for p in "${PAGES[@]}"; do
    IFS='|' read -r name path auth <<<"$p"
    extra=()
    [[ "$auth" == 1 ]] && extra=(--extra-headers="$COOKIE_HEADERS")
    ok=false
    for attempt in $(seq 1 "$ATTEMPTS"); do
        log "lighthouse $path$([[ $auth == 1 ]] && echo ' (signed in)')$( (( attempt > 1 )) && echo " (attempt $attempt)")"
        rm -f "$REPORTS/$name.json"
        rc=0
        bench_lock
        timeout --kill-after=10 "$LH_TIMEOUT_S" \
            "$LH" "$BASE$path" \
                --output=json --output-path="$REPORTS/$name.json" \
                --only-categories="$CATEGORIES" \
                --chrome-flags="$CHROME_FLAGS" \
                "${extra[@]}" \
                --quiet >"$WORK/lh-$name.log" 2>&1 9>&- || rc=$?
        bench_unlock
        if (( rc == 0 )) && [[ -s "$REPORTS/$name.json" ]]; then ok=true; break; fi
        # Lighthouse exits 1 on a runtime error such as NO_NAVSTART (a trace
        # recording flake); such runs are retried.
        log "  failed (exit $rc): $(grep -m1 -i 'error' "$WORK/lh-$name.log" || tail -n 1 "$WORK/lh-$name.log")"
    done
    if [[ "$ok" != true ]]; then
        tail -n 30 "$WORK/lh-$name.log" >&2 || true
        die "lighthouse failed for $path after $ATTEMPTS attempts"
    fi
    ATTEMPTS_USED+=("$name:$attempt")
done
kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the Lighthouse runs"

# ---------------------------------------------------------------- report --
NPROC="$(nproc)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
OUT="$WORK/result.json"

cat >"$WORK/summary.js" <<'JS'
// Reads the Lighthouse reports, prints the table, writes the results JSON.
const fs = require('fs');
const [reportsDir, outPath, metaJson, pagesSpec] = process.argv.slice(2);
const meta = JSON.parse(metaJson);
const cats = ['performance', 'accessibility', 'best-practices', 'seo'];
const pages = pagesSpec.split(';').map((s) => {
  const [name, path, auth] = s.split('|');
  return { name, path, signedIn: auth === '1' };
});
const out = { ...meta, pages: [] };
const pct = (s) => (s === null || s === undefined ? null : Math.round(s * 100));
for (const p of pages) {
  const lhr = JSON.parse(fs.readFileSync(`${reportsDir}/${p.name}.json`, 'utf8'));
  const page = {
    name: p.name, path: p.path, signed_in: p.signedIn,
    final_url: lhr.finalDisplayedUrl || lhr.finalUrl,
    runtime_error: lhr.runtimeError ? lhr.runtimeError.message : null,
    run_warnings: lhr.runWarnings || [],
    scores: {}, failed_audits: {},
  };
  for (const c of cats) {
    const cat = lhr.categories[c];
    page.scores[c] = cat ? pct(cat.score) : null;
    page.failed_audits[c] = [];
    if (!cat) continue;
    for (const ref of cat.auditRefs) {
      const a = lhr.audits[ref.id];
      if (!a || a.score === null || a.score === undefined || a.score >= 1) continue;
      page.failed_audits[c].push({
        id: a.id, title: a.title, score: a.score, weight: ref.weight,
        ...(a.displayValue ? { display_value: a.displayValue } : {}),
      });
    }
  }
  const m = (id) => (lhr.audits[id] && lhr.audits[id].numericValue !== undefined
    ? Math.round(lhr.audits[id].numericValue) : null);
  page.metrics_ms = {
    fcp: m('first-contentful-paint'), lcp: m('largest-contentful-paint'),
    tbt: m('total-blocking-time'), speed_index: m('speed-index'),
  };
  page.cls = lhr.audits['cumulative-layout-shift']
    ? Number(lhr.audits['cumulative-layout-shift'].numericValue.toFixed(3)) : null;
  out.lighthouse_version = lhr.lighthouseVersion;
  out.user_agent = lhr.environment && lhr.environment.hostUserAgent;
  out.form_factor = lhr.configSettings && lhr.configSettings.formFactor;
  out.throttling_method = lhr.configSettings && lhr.configSettings.throttlingMethod;
  out.pages.push(page);
}
fs.writeFileSync(outPath + '.tmp', JSON.stringify(out, null, 2) + '\n');
fs.renameSync(outPath + '.tmp', outPath);

const w = (s, n) => String(s).padEnd(n);
const r = (s, n) => String(s).padStart(n);
console.log('');
console.log(`Huntaze Lighthouse ${out.lighthouse_version}  commit ${meta.commit}${meta.dirty ? ' (dirty)' : ''}  nproc ${meta.nproc}  ${out.form_factor}, ${out.throttling_method} throttling  ${meta.chrome}`);
console.log(w('page', 28) + cats.map((c) => r(c, 15)).join('') + r('FCP ms', 9) + r('LCP ms', 9) + r('TBT ms', 8) + r('CLS', 7));
for (const p of out.pages) {
  console.log(w(p.path, 28) + cats.map((c) => r(p.scores[c] ?? '-', 15)).join('')
    + r(p.metrics_ms.fcp ?? '-', 9) + r(p.metrics_ms.lcp ?? '-', 9) + r(p.metrics_ms.tbt ?? '-', 8) + r(p.cls ?? '-', 7));
}
for (const p of out.pages) {
  if (p.runtime_error) console.log(`${p.path}: runtime error: ${p.runtime_error}`);
  for (const c of cats) {
    const f = p.failed_audits[c];
    if (!f.length) continue;
    console.log(`${p.path} ${c} (${p.scores[c]}): ` + f.map((a) => `${a.id} (${a.score})`).join(', '));
  }
}
JS

META="$(printf '{"benchmark":"lighthouse","timestamp":"%s","commit":"%s","dirty":%s,"nproc":%s,"chrome":"%s","chrome_flags":"%s","categories":"%s","attempts":"%s"}' \
    "$NOW" "$COMMIT" "$DIRTY" "$NPROC" "$CHROME_VERSION" "$CHROME_FLAGS" "$CATEGORIES" "${ATTEMPTS_USED[*]}")"
SPEC="$(IFS=';'; echo "${PAGES[*]}")"
node "$WORK/summary.js" "$REPORTS" "$OUT" "$META" "$SPEC" || die "could not summarize the reports"
write_result lighthouse "$OUT"
