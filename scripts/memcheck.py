#!/usr/bin/env python3
"""Resident memory with a full L1 (performance.md: <= 100 MB with 10,000 entries).

Sends 11,000 distinct decisions (11 batches of 1,000 through the OPA batch API,
so L1_CACHE_SIZE=10,000 is full and has evicted) to a running acgs serve on
loopback and prints heap, RSS and L1 entries from its /metrics.

    acgs serve &                      # or GOMEMLIMIT=70MiB acgs serve &
    scripts/memcheck.py http://127.0.0.1:8004
"""
import ipaddress, json, os, sys, urllib.parse, urllib.request

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8004"
host = urllib.parse.urlsplit(base).hostname or ""
try:
    loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
except ValueError:
    loopback = False
if not loopback:
    sys.exit("memcheck: loopback addresses only (127.0.0.1, ::1, localhost)")
# No proxy, even if http_proxy is set: traffic stays on this machine.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 120
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
safe = json.load(open(os.path.join(root, "testdata/requests/safe.json")))
n = 0
for b in range(11):
    inputs = {}
    for i in range(1000):
        x = json.loads(json.dumps(safe))
        x['context']['agent']['id'] = f'mem-{b}-{i}'
        x['action'] = ['data.read_public', 'data.read_own', 'model.inference'][i % 3]
        inputs[str(i)] = x
    body = json.dumps({'inputs': inputs}).encode()
    req = urllib.request.Request(base + '/v1/batch/data/acgs/main/decision', data=body, headers={'Content-Type': 'application/json'})
    r = opener.open(req, timeout=TIMEOUT)
    n += len(json.load(r)['responses'])
m = opener.open(base + '/metrics', timeout=TIMEOUT).read().decode()
for name in ['go_memstats_heap_inuse_bytes', 'process_resident_memory_bytes', 'acgs_cache_l1_entries']:
    for line in m.splitlines():
        if line.startswith(name):
            print(line)
print('decisions', n)
