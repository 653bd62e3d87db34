#!/usr/bin/env python3
"""A fixed number of GET requests over a few keep-alive connections.

    bench/drive.py PORT PATH COUNT [CONNECTIONS] [HEADER: VALUE ...]

Used by bench/callgrind.sh, which needs an exact request count (wrk and oha
are duration- or rate-driven, and their own speed is irrelevant here: the
server runs under valgrind). Exits non-zero if any response is not 2xx.
"""

import http.client
import sys
import threading


def worker(port, path, count, headers, failures):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(count):
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        res.read()
        if not 200 <= res.status < 300:
            failures.append(res.status)
    conn.close()


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    headers = {}
    for h in sys.argv[5:]:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    failures = []
    per, extra = divmod(count, conns)
    threads = [
        threading.Thread(
            target=worker,
            args=(port, path, per + (1 if i < extra else 0), headers, failures),
        )
        for i in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"{len(failures)} non-2xx responses, first {failures[0]}")


if __name__ == "__main__":
    main()
