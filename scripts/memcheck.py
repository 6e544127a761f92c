#!/usr/bin/env python3
"""Resident memory with a full L1 (performance.md: <= 80 MB with 10,000
distinct decisions in L1 and no memory settings).

Sends distinct decisions (default 11,000, so that L1_CACHE_SIZE=10,000 is full
and has evicted) one request at a time over a kept-alive loopback connection,
then prints the server's resident memory from /proc/PID/status (VmRSS, and
VmHWM, the peak; RssAnon, RssFile: the binary's pages) with heap and L1
figures from its /metrics, and, when it can ask for one (a started server
gets an ADMIN_TOKEN, which enables /debug/pprof), the live heap after a
forced collection, read after resident memory.

Inputs differ in a field the constitution reads, so each is its own cache key
(a field the policy does not read, such as an agent id, would give one key):

  --vary trust        context.agent.trust_level 0.9 + i*1e-7: every decision is
                      a different value too (the trust level is echoed in it);
                      the worst case for memory, and the default
  --vary explanation  context.explanation gets " #i": distinct keys whose
                      decisions are all alike (agents asking the same thing)

Start a server with no memory settings and measure it (GOMEMLIMIT and
MEMORY_LIMIT_RATIO are removed from its environment; give them with --env):

    go build -o bin/acgs ./cmd/acgs
    scripts/memcheck.py --binary bin/acgs [--vary trust] [--env GOMEMLIMIT=70MiB]

or measure a server that is already running (pid for /proc):

    scripts/memcheck.py --url http://127.0.0.1:8004 --pid PID [--admin-token TOKEN]

--passes 2 sends the same decisions again (L1 hits: each decision is read
back, and decoded when L1 does not hold it decoded) before measuring.
"""
import argparse, http.client, ipaddress, json, os, secrets, socket, subprocess, sys, time, urllib.parse, urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--binary", help="acgs binary to start (serve on a free loopback port)")
ap.add_argument("--url", help="a running server (loopback only)")
ap.add_argument("--pid", type=int, help="the running server's pid, for /proc")
ap.add_argument("--decisions", type=int, default=11000)
ap.add_argument("--vary", choices=["trust", "explanation"], default="trust")
ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the started server")
ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the last decision before reading /proc")
ap.add_argument("--passes", type=int, default=1, help="times the same decisions are sent (the second and later are L1 hits)")
ap.add_argument("--admin-token", help="ADMIN_TOKEN of a running server (--url), to read the live heap after a forced GC")
args = ap.parse_args()
if bool(args.binary) == bool(args.url):
    sys.exit("memcheck: give --binary or --url")
if args.url and not args.pid:
    sys.exit("memcheck: --url needs --pid (resident memory is read from /proc/PID/status)")

TIMEOUT = 120
# No proxy, even if http_proxy is set: traffic stays on this machine.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def loopback(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def metrics(base):
    m = opener.open(base + "/metrics", timeout=TIMEOUT).read().decode()
    out = {}
    for line in m.splitlines():
        for name in ("go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes",
                     "go_gc_gomemlimit_bytes", "acgs_cache_l1_entries"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[1])
    return out


proc = None
if args.binary:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {k: v for k, v in os.environ.items() if k not in ("GOMEMLIMIT", "MEMORY_LIMIT_RATIO", "GOGC")}
    # An admin token (not a memory setting) enables /debug/pprof, through
    # which the live heap is read after a forced collection.
    args.admin_token = env.setdefault("ADMIN_TOKEN", secrets.token_hex(24))
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    proc = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base, pid = f"http://127.0.0.1:{port}", proc.pid
    deadline = time.time() + 60
    while True:
        try:
            opener.open(base + "/health", timeout=2).read()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("memcheck: the server did not start: " + (proc.stderr.read() if proc.poll() is not None else "timeout"))
            time.sleep(0.2)
else:
    base, pid = args.url.rstrip("/"), args.pid
if not loopback(base):
    sys.exit("memcheck: loopback addresses only (127.0.0.1, ::1, localhost)")

try:
    idle = status(pid)
    safe = json.load(open(os.path.join(root, "testdata/requests/safe.json")))
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    allowed = 0
    start = time.time()
    for i in [i for _ in range(args.passes) for i in range(args.decisions)]:
        x = json.loads(json.dumps(safe))
        x["context"]["agent"]["id"] = f"mem-{i}"
        if args.vary == "trust":
            x["context"]["agent"]["trust_level"] = round(0.9 + i * 1e-7, 7)
        else:
            x["context"]["explanation"] += f" #{i}"
        conn.request("POST", "/v1/data/acgs/main/decision", body=json.dumps(x), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"memcheck: decision {i}: HTTP {r.status}: {body[:200]!r}")
        allowed += json.loads(body).get("allow") is True
    took = time.time() - start
    time.sleep(args.settle)
    m = metrics(base)
    st = status(pid)
    mib = 1 << 20
    live = None
    if args.admin_token:
        try:
            req = urllib.request.Request(base + "/debug/pprof/heap?gc=1", headers={"Authorization": "Bearer " + args.admin_token})
            opener.open(req, timeout=TIMEOUT).read()
            live = metrics(base).get("go_memstats_heap_alloc_bytes")
        except Exception as e:
            print(f"memcheck: no live heap: {e}", file=sys.stderr)
    passes = f" x {args.passes} passes" if args.passes > 1 else ""
    print(f"decisions {args.decisions}{passes} (vary {args.vary}), allowed {allowed}, in {took:.1f} s")
    print(f"L1 entries {m.get('acgs_cache_l1_entries', float('nan')):.0f}")
    print(f"VmRSS idle {idle['VmRSS'] / mib:.1f} MiB, after {st['VmRSS'] / mib:.1f} MiB ({st['VmRSS'] / 1e6:.1f} MB), peak VmHWM {st['VmHWM'] / mib:.1f} MiB")
    print(f"RssAnon {st.get('RssAnon', 0) / mib:.1f} MiB, RssFile {st.get('RssFile', 0) / mib:.1f} MiB (idle: {idle.get('RssAnon', 0) / mib:.1f}, {idle.get('RssFile', 0) / mib:.1f})")
    print("heap in use {:.1f} MiB, heap alloc {:.1f} MiB, next GC {:.1f} MiB, GOMEMLIMIT {}".format(
        m.get("go_memstats_heap_inuse_bytes", 0) / mib, m.get("go_memstats_heap_alloc_bytes", 0) / mib,
        m.get("go_memstats_next_gc_bytes", 0) / mib,
        "none" if m.get("go_gc_gomemlimit_bytes", 0) >= 2**62 else f"{m.get('go_gc_gomemlimit_bytes', 0) / mib:.1f} MiB"))
    if live is not None:
        print(f"live heap after a forced GC {live / mib:.1f} MiB ({live / 1e6:.1f} MB)")
finally:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
