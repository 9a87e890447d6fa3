#!/usr/bin/env python3
"""Benchmarks of `skiff serve` (run by bench/serve.sh):

  reload  from a file's save to its new version active (the engine's
          `loaded` event on the control socket), median over 20 saves;
          target <= 300 ms
  firing  from a schedule's time to its run's start (the `run_started`
          event's `started - scheduled`, both taken by the engine), over
          ~10 s of per-second schedules; target <= 1 s
  idle    CPU of the engine with 100 policies loaded and scheduled and
          none due, from /proc/PID/stat over 30 s; target < 1 %

Needs no AWS: the engine runs with --no-reap and policies that do no work.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Control:
    """A subscribed connection to the engine's control socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.sock.sendall(b'{"id": 1, "op": "subscribe"}\n')
        first = self.next()
        assert first.get("ok"), first

    def next(self, timeout=None):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the engine closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def wait_for(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching event")
            ev = self.next(timeout=left)
            if pred(ev):
                return ev


POLICY = """policy{{
  name = "{name}", schedule = "{schedule}", select = {{ tags = {{ app = "bench" }} }},
  repository = "/srv/skiff", retention = {{ keep_last = 1 }},
  run = function(ctx) return {{ points = 0 }} end,
}}
"""


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def main():
    skiff = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="skiff-bench-")
    pol = os.path.join(work, "policies")
    os.makedirs(pol)
    with open(os.path.join(work, "skiff.toml"), "w") as f:
        f.write('region = "us-east-1"\n')
    bench_file = os.path.join(pol, "bench.lua")
    with open(bench_file, "w") as f:
        f.write(POLICY.format(name="reload", schedule="@yearly") + "-- save 0\n")
    env = dict(os.environ, SKIFF_LOG="warn")
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen(
        [skiff, "serve", "policies", "--state-dir", "state", "--no-reap"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log)
    results = {}
    try:
        sock = os.path.join(work, "state", "serve.sock")
        for _ in range(200):
            if os.path.exists(sock):
                try:
                    ctl = Control(sock)
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise SystemExit("skiff serve did not start; see " + log.name)
        time.sleep(0.5)

        # 1. Hot reload: save -> new version active.
        reloads = []
        for i in range(1, 21):
            with open(bench_file, "w") as f:
                f.write(POLICY.format(name="reload", schedule="@yearly") + f"-- save {i}\n")
            t0 = time.monotonic()
            ctl.wait_for(lambda e: e.get("event") == "loaded" and e["file"].endswith("bench.lua"))
            reloads.append((time.monotonic() - t0) * 1000)
            time.sleep(0.4)
        results["reload_ms"] = {
            "median": round(statistics.median(reloads), 1),
            "min": round(min(reloads), 1),
            "max": round(max(reloads), 1),
            "n": len(reloads),
        }

        # 2. Firing delay: five per-second policies for ~10 s.
        with open(os.path.join(pol, "fire.lua"), "w") as f:
            for i in range(5):
                f.write(POLICY.format(name=f"fire-{i}", schedule="* * * * * *"))
        delays = []
        end = time.monotonic() + 10.5
        while time.monotonic() < end:
            try:
                ev = ctl.next(timeout=max(0.01, end - time.monotonic()))
            except socket.timeout:
                break
            if ev.get("event") == "run_started" and ev["policy"].startswith("fire-"):
                delays.append((parse_time(ev["started"]) - parse_time(ev["scheduled"])) * 1000)
        os.remove(os.path.join(pol, "fire.lua"))
        results["firing_delay_ms"] = {
            "median": round(statistics.median(delays), 1),
            "p99": round(sorted(delays)[int(len(delays) * 0.99) - 1], 1),
            "max": round(max(delays), 1),
            "n": len(delays),
        }

        # 3. Idle: 100 policies (10 files x 10) scheduled, none due for hours.
        for fi in range(10):
            with open(os.path.join(pol, f"many-{fi}.lua"), "w") as f:
                for pi in range(10):
                    f.write(POLICY.format(name=f"many-{fi}-{pi}", schedule="0 0 3 * * *"))
        loaded = set()
        deadline = time.monotonic() + 20
        while len(loaded) < 10 and time.monotonic() < deadline:
            ev = ctl.next(timeout=5)
            if ev.get("event") == "loaded" and "many-" in ev["file"]:
                loaded.add(ev["file"])
        assert len(loaded) == 10, loaded
        time.sleep(2)
        secs = 30
        hz = os.sysconf("SC_CLK_TCK")
        a, t0 = cpu_ticks(proc.pid), time.monotonic()
        time.sleep(secs)
        b, t1 = cpu_ticks(proc.pid), time.monotonic()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(l for l in f if l.startswith("VmRSS:")).split()[1]
        results["idle_100_policies"] = {
            "cpu_percent": round((b - a) / hz / (t1 - t0) * 100, 3),
            "seconds": secs,
            "rss_mib": round(int(rss) / 1024, 1),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    results["binary"] = skiff
    print(json.dumps(results, indent=2))
    ok = (results["reload_ms"]["median"] <= 300
          and results["firing_delay_ms"]["max"] <= 1000
          and results["idle_100_policies"]["cpu_percent"] < 1.0)
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
