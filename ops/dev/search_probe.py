#!/usr/bin/env python3
"""Searches a running `amber serve` without pause until STOP_FILE exists: item queries of ids
drawn from IDS_FILE (one per line; re-read as it grows), with `k` 10 and stage 2 as the model
serves it. Prints one JSON summary line at the end: requests, failures (anything but 200, or
no answer), latency percentiles, and the model versions that answered.
    search_probe.py URL KEY IDS_FILE STOP_FILE [INTERVAL_SECONDS]"""
import json, random, sys, time, urllib.error, urllib.request, os

url, key, ids_file, stop_file = sys.argv[1:5]
interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
random.seed(1)
latencies, failures, versions, ids, checked = [], [], {}, [], 0
while not os.path.exists(stop_file):
    if time.time() - checked > 5:
        with open(ids_file) as f:
            ids = [int(line) for line in f if line.strip()]
        checked = time.time()
    if not ids:
        time.sleep(0.5)
        continue
    body = json.dumps({"item_id": random.choice(ids), "k": 10}).encode()
    request = urllib.request.Request(url + "/v1/search", data=body, method="POST",
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    start = time.time()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
            versions[answer["model_version"]] = versions.get(answer["model_version"], 0) + 1
    except urllib.error.HTTPError as error:
        failures.append({"status": error.code, "at": round(start, 1), "body": error.read()[:200].decode(errors="replace")})
    except Exception as error:  # no answer at all
        failures.append({"status": None, "at": round(start, 1), "error": str(error)})
    latencies.append(time.time() - start)
    time.sleep(interval)
latencies.sort()
def percentile(p):
    return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None
print(json.dumps({"requests": len(latencies), "failures": len(failures), "first_failures": failures[:5],
                  "p50_ms": percentile(0.5), "p99_ms": percentile(0.99), "max_ms": percentile(1.0),
                  "answered_by_version": versions}))
