#!/usr/bin/env python3
"""Load generator of bench/tiktok_flow.sh (Python 3 standard library only).

Drives complete TikTok connect flows against a running Huntaze server that
is pointed at a standalone TikTok sandbox, and measures:

1. latency: for N flows (one signed-in user, sequential), the GET of our
   callback (token exchange + user info against the sandbox + database
   writes, inside the server) and, interleaved with it, the same two
   sandbox calls made directly from here (POST /v2/oauth/token/ with a code
   obtained through our own authorize + decision steps and our own PKCE
   verifier, then GET /v2/user/info/ with the returned access token);
2. throughput: W worker processes, each with its own registered user, run
   complete flows in a loop for D seconds; flows ending in
   /platforms/connect/tiktok?status=connected are counted.

Every connection is a persistent HTTP/1.1 connection (http.client, no
automatic redirects), as the server's own reqwest client uses to the
sandbox. Prints a table and writes the results as JSON (--out).

Not meant to be run by hand: bench/tiktok_flow.sh starts the servers and
passes the arguments.
"""

import argparse
import base64
import hashlib
import html.parser
import http.client
import json
import multiprocessing as mp
import os
import resource
import secrets
import statistics
import sys
import threading
import time
import urllib.parse

SESSION_COOKIE = "huntaze_session"
CONNECTED_PATH = "/platforms/connect/tiktok"
# What the server asks for (config default tiktok_scopes; client.rs fields).
SCOPES = "user.info.basic,user.info.profile"
USER_INFO_FIELDS = "open_id,union_id,avatar_url,display_name"
REQUEST_TIMEOUT_S = 30


class FlowError(Exception):
    """A flow that did not end in status=connected; `kind` is a short label."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


# ------------------------------------------------------------------ HTTP --
class Http:
    """One persistent connection per origin; no redirects are followed."""

    def __init__(self):
        self.conns = {}

    def _conn(self, origin):
        c = self.conns.get(origin)
        if c is None:
            u = urllib.parse.urlsplit(origin)
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT_S)
            self.conns[origin] = c
        return c

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns.clear()

    def request(self, method, url, headers=None, body=None):
        """Returns (status, headers (lower-case keys), body bytes, seconds).

        A request on a reused connection that the peer had closed is retried
        once on a fresh connection (the usual keep-alive race); the time of
        the retried attempt alone is returned."""
        u = urllib.parse.urlsplit(url)
        origin = f"{u.scheme}://{u.netloc}"
        target = u.path + (f"?{u.query}" if u.query else "")
        hdrs = {"Host": u.netloc, "User-Agent": "huntaze-bench/tiktok_flow"}
        if headers:
            hdrs.update(headers)
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            c = self._conn(origin)
            reused = c.sock is not None
            t0 = time.perf_counter()
            try:
                c.request(method, target, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady,
                    http.client.BadStatusLine) as e:
                c.close()
                self.conns.pop(origin, None)
                if attempt == 0 and reused:
                    continue
                raise FlowError("connection", f"{method} {u.path}: {e!r}") from e
            except (OSError, http.client.HTTPException) as e:
                c.close()
                self.conns.pop(origin, None)
                raise FlowError("connection", f"{method} {u.path}: {e!r}") from e
            dt = time.perf_counter() - t0
            rh = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                c.close()
                self.conns.pop(origin, None)
            return r.status, rh, data, dt
        raise AssertionError("unreachable")


class FormParser(html.parser.HTMLParser):
    """The sandbox authorize page's form: action and named inputs."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        elif tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ------------------------------------------------------------------ flows --
class Client:
    def __init__(self, base, sandbox, name):
        self.base = base.rstrip("/")
        self.sandbox = sandbox.rstrip("/")
        self.redirect_uri = f"{self.base}/api/auth/tiktok/callback"
        self.display_name = name  # distinct per worker: a distinct TikTok open_id
        self.http = Http()
        self.cookie = None

    def register(self, email, password, attempts=8):
        body = json.dumps({"email": email, "password": password})
        for i in range(attempts):
            st, h, data, _ = self.http.request(
                "POST", f"{self.base}/api/auth/register",
                {"Content-Type": "application/json", "Accept": "application/json"}, body)
            if st == 201:
                for part in h.get("set-cookie", "").split(";"):
                    k, _, v = part.strip().partition("=")
                    if k == SESSION_COOKIE and v:
                        self.cookie = f"{SESSION_COOKIE}={v}"
                        return
                raise FlowError("register", "201 without a session cookie")
            if st in (429, 503) and i + 1 < attempts:  # hash queue busy: back off
                time.sleep(0.2 * (i + 1))
                continue
            raise FlowError("register", f"status {st}: {data[:200]!r}")

    def _authorize_and_allow(self, authorize_url):
        """GET the sandbox's authorize page, POST decision=allow; returns
        the 303's Location (the redirect_uri with code, scopes, state)."""
        st, _, data, _ = self.http.request("GET", authorize_url, {"Accept": "text/html"})
        if st != 200:
            raise FlowError("authorize_page", f"status {st}")
        p = FormParser()
        p.feed(data.decode("utf-8", "replace"))
        if not p.action or "state" not in p.fields:
            raise FlowError("authorize_page", "no decision form")
        fields = dict(p.fields)
        fields["display_name"] = self.display_name
        fields["decision"] = "allow"
        action = urllib.parse.urljoin(authorize_url, p.action)
        st, h, _, _ = self.http.request(
            "POST", action, {"Content-Type": "application/x-www-form-urlencoded"},
            urllib.parse.urlencode(fields))
        loc = h.get("location")
        if st not in (302, 303) or not loc:
            raise FlowError("decision", f"status {st}")
        return urllib.parse.urljoin(action, loc)

    def connect_flow(self):
        """One complete flow through our server. Returns the callback's
        seconds (the GET of /api/auth/tiktok/callback alone)."""
        auth = {"Cookie": self.cookie, "Accept": "text/html"}
        st, h, _, _ = self.http.request("GET", f"{self.base}/api/auth/tiktok", auth)
        loc = h.get("location", "")
        if st != 302 or not loc.startswith(self.sandbox + "/"):
            raise FlowError("start", f"status {st} location {loc[:120]!r}")
        callback = self._authorize_and_allow(loc)
        if not callback.startswith(self.redirect_uri + "?"):
            raise FlowError("decision", f"unexpected location {callback[:120]!r}")
        st, h, _, dt = self.http.request("GET", callback, auth)
        loc = h.get("location", "")
        if st != 302:
            raise FlowError("callback", f"status {st}")
        if loc != f"{CONNECTED_PATH}?status=connected":
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
            raise FlowError("callback:" + (q.get("error", ["?"])[0]), loc[:120])
        return dt

    def direct_sandbox(self):
        """Our own authorize + decision with our own PKCE pair, then the two
        calls the callback makes, timed: (token s, user info s)."""
        verifier = b64url(secrets.token_bytes(48))  # 64 chars, like the server's
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        q = urllib.parse.urlencode({
            "client_key": "sandbox-client-key",
            "scope": SCOPES,
            "response_type": "code",
            "redirect_uri": self.redirect_uri,
            "state": b64url(secrets.token_bytes(32)),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        })
        loc = self._authorize_and_allow(f"{self.sandbox}/v2/auth/authorize/?{q}")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query).get("code", [None])[0]
        if not code:
            raise FlowError("direct:decision", "no code")
        form = urllib.parse.urlencode({
            "client_key": "sandbox-client-key",
            "client_secret": "sandbox-client-secret",
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        })
        st, _, data, t_token = self.http.request(
            "POST", f"{self.sandbox}/v2/oauth/token/",
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}, form)
        if st != 200:
            raise FlowError("direct:token", f"status {st}: {data[:200]!r}")
        token = json.loads(data).get("access_token")
        if not token:
            raise FlowError("direct:token", "no access_token")
        st, _, data, t_info = self.http.request(
            "GET", f"{self.sandbox}/v2/user/info/?fields={USER_INFO_FIELDS}",
            {"Authorization": f"Bearer {token}", "Accept": "application/json"})
        if st != 200 or json.loads(data).get("error", {}).get("code") != "ok":
            raise FlowError("direct:user_info", f"status {st}")
        return t_token, t_info


# ------------------------------------------------------------------ stats --
def pct(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def summary_ms(xs):
    if not xs:
        return None
    ms = [x * 1000 for x in xs]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "max_ms": round(max(ms), 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


def proc_cpu_s(pid):
    """utime + stime of a process, seconds (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------ phases --
def latency_phase(args, run_id):
    c = Client(args.base, args.sandbox, "Bench Latency Creator")
    c.register(f"bench-tiktok-{run_id}-lat@example.com", "bench-tiktok-Password-1")
    for _ in range(args.warmup):
        c.connect_flow()
        c.direct_sandbox()
    cb, tok, info, direct, paired = [], [], [], [], []
    failures = {}
    for i in range(args.flows):
        # Alternate which goes first so neither always runs on a "warmer" path.
        order = (0, 1) if i % 2 == 0 else (1, 0)
        got = [None, None]
        for which in order:
            try:
                got[which] = c.connect_flow() if which == 0 else c.direct_sandbox()
            except (FlowError, ValueError) as e:
                kind = getattr(e, "kind", type(e).__name__)
                failures[kind] = failures.get(kind, 0) + 1
        if got[0] is not None:
            cb.append(got[0])
        if got[1] is not None:
            tok.append(got[1][0])
            info.append(got[1][1])
            direct.append(got[1][0] + got[1][1])
        if got[0] is not None and got[1] is not None:
            paired.append(got[0] - sum(got[1]))
    c.http.close()
    return {
        "flows": args.flows, "warmup": args.warmup,
        "callback": summary_ms(cb),
        "sandbox_direct": summary_ms(direct),
        "sandbox_token": summary_ms(tok),
        "sandbox_user_info": summary_ms(info),
        "overhead_p50_ms": (round((pct(cb, 50) - pct(direct, 50)) * 1000, 3)
                            if cb and direct else None),
        "overhead_paired_median_ms": (round(statistics.median(paired) * 1000, 3)
                                      if paired else None),
        "failures": failures,
    }


def throughput_worker(idx, args, run_id, barrier, out_q):
    try:
        _throughput_worker(idx, args, run_id, barrier, out_q)
    except Exception as e:  # noqa: BLE001 - always answer, never hang the parent
        barrier.abort()
        out_q.put({"worker": idx, "error": f"worker crashed: {e!r}"})


def _throughput_worker(idx, args, run_id, barrier, out_q):
    c = Client(args.base, args.sandbox, f"Bench Creator {idx}")
    res = {"worker": idx, "connected": 0, "late": 0, "failures": {}, "callback_s": [],
           "flow_s": [], "error": None, "start": None, "end": None, "cpu_s": 0.0}
    try:
        c.register(f"bench-tiktok-{run_id}-w{idx}@example.com", "bench-tiktok-Password-1")
        c.connect_flow()  # warm: connections open, first-flow costs paid
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e)
    try:
        barrier.wait(timeout=120)
    except Exception:  # noqa: BLE001 - a broken barrier: report, don't hang
        res["error"] = res["error"] or "barrier broken"
    if res["error"]:
        out_q.put(res)
        return
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    deadline = start + args.duration
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        try:
            cb = c.connect_flow()
            t1 = time.monotonic()
            if t1 <= deadline:
                res["connected"] += 1
                res["callback_s"].append(cb)
                res["flow_s"].append(t1 - t0)
            else:
                res["late"] += 1  # finished after the window: not counted
        except (FlowError, ValueError) as e:  # ValueError: a body that is not JSON/UTF-8
            e.kind = getattr(e, "kind", type(e).__name__)
            if time.monotonic() <= deadline:
                res["failures"][e.kind] = res["failures"].get(e.kind, 0) + 1
                if len(res.setdefault("examples", [])) < 3:
                    res["examples"].append(str(e)[:200])
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["start"], res["end"] = start, deadline
    c.http.close()
    out_q.put(res)


def throughput_phase(args, run_id):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.workers + 1)
    out_q = ctx.Queue()
    procs = [ctx.Process(target=throughput_worker, args=(i, args, run_id, barrier, out_q))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=180)
    except threading.BrokenBarrierError:
        pass  # a worker could not start: every worker reports, nothing is measured
    cpu0 = {k: proc_cpu_s(pid) for k, pid in (("server", args.server_pid), ("sandbox", args.sandbox_pid))}
    results = [out_q.get(timeout=args.duration + 180) for _ in procs]
    cpu1 = {k: proc_cpu_s(pid) for k, pid in (("server", args.server_pid), ("sandbox", args.sandbox_pid))}
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [r["error"] for r in results if r["error"]]
    ok = [r for r in results if not r["error"]]
    connected = sum(r["connected"] for r in ok)
    failures = {}
    for r in ok:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    examples = [e for r in ok for e in r.get("examples", [])][:5]
    window = (max(r["end"] for r in ok) - min(r["start"] for r in ok)) if ok else 0.0
    cb = [x for r in ok for x in r["callback_s"]]
    flow = [x for r in ok for x in r["flow_s"]]
    cpu = {}
    for k in ("server", "sandbox"):
        if cpu0[k] is not None and cpu1[k] is not None:
            cpu[k] = round(cpu1[k] - cpu0[k], 3)
    cpu["client"] = round(sum(r["cpu_s"] for r in ok), 3)
    return {
        "workers": args.workers, "workers_failed_to_start": errors,
        "duration_s": args.duration, "window_s": round(window, 3),
        "connected": connected, "failures": failures, "failure_examples": examples,
        "failed_total": sum(failures.values()),
        "finished_after_window": sum(r["late"] for r in ok),
        "flows_per_s": round(connected / window, 1) if window > 0 else None,
        "callback": summary_ms(cb), "flow": summary_ms(flow),
        "cpu_s": cpu,
        "server_cpu_ms_per_flow": (round(cpu["server"] * 1000 / connected, 3)
                                   if connected and "server" in cpu else None),
        "sandbox_cpu_ms_per_flow": (round(cpu["sandbox"] * 1000 / connected, 3)
                                    if connected and "sandbox" in cpu else None),
    }


def fmt(v, unit=""):
    return "-" if v is None else f"{v}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--sandbox", required=True)
    ap.add_argument("--flows", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--sandbox-pid", type=int, required=True)
    ap.add_argument("--meta", default="{}", help="JSON object merged into the results")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.flows < 1 or args.workers < 1 or args.duration <= 0 or args.warmup < 0:
        ap.error("flows, workers and duration must be positive")

    run_id = secrets.token_hex(4)
    meta = json.loads(args.meta)
    print(f"[bench] latency: {args.warmup} warm-up + {args.flows} flows, one user, sequential",
          file=sys.stderr, flush=True)
    lat = latency_phase(args, run_id)
    print(f"[bench] throughput: {args.workers} workers (processes), one user each, "
          f"complete flows for {args.duration:g} s", file=sys.stderr, flush=True)
    thr = throughput_phase(args, run_id)

    result = dict(meta)
    result.update({"latency": lat, "throughput": thr})
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)

    m = meta
    print()
    print(f"Huntaze TikTok connect flow benchmark  commit {m.get('commit', '?')}"
          f"{' (dirty)' if m.get('dirty') else ''}  nproc {m.get('nproc', '?')}  "
          f"(loopback, release, SQLite, standalone sandbox)")
    print()
    print(f"1. latency, {lat['flows']} sequential flows (one user)")
    print(f"   {'measurement':<44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'n':>5}")
    rows = [
        ("GET /api/auth/tiktok/callback (ours)", lat["callback"]),
        ("sandbox direct: token + user info", lat["sandbox_direct"]),
        ("  of which POST /v2/oauth/token/", lat["sandbox_token"]),
        ("  of which GET /v2/user/info/", lat["sandbox_user_info"]),
    ]
    for name, s in rows:
        if s:
            print(f"   {name:<44} {s['p50_ms']:>8.3f} {s['p90_ms']:>8.3f} {s['p99_ms']:>8.3f} {s['n']:>5}")
        else:
            print(f"   {name:<44} {'-':>8} {'-':>8} {'-':>8} {0:>5}")
    print(f"   overhead = callback p50 - sandbox p50: {fmt(lat['overhead_p50_ms'], ' ms')}"
          f"   (median of per-flow differences: {fmt(lat['overhead_paired_median_ms'], ' ms')})")
    if lat["failures"]:
        print(f"   failures: {lat['failures']}")
    print()
    print(f"2. throughput, {thr['workers']} concurrent users for {thr['duration_s']:g} s")
    print(f"   connect flows/s: {fmt(thr['flows_per_s'])}   connected: {thr['connected']}   "
          f"failed: {thr['failed_total']}   finished after the window: {thr['finished_after_window']}")
    if thr["failures"]:
        print(f"   failures by kind: {thr['failures']}")
    for s, name in ((thr["flow"], "whole flow (4 requests)"), (thr["callback"], "callback under load")):
        if s:
            print(f"   {name:<26} p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms")
    cpu = thr["cpu_s"]
    print(f"   CPU seconds in the window: server {fmt(cpu.get('server'))}  sandbox "
          f"{fmt(cpu.get('sandbox'))}  load generator {fmt(cpu.get('client'))}"
          f"   -> server {fmt(thr['server_cpu_ms_per_flow'], ' ms')}/flow")
    if thr["workers_failed_to_start"]:
        print(f"   workers that failed to start: {thr['workers_failed_to_start']}")


if __name__ == "__main__":
    main()
