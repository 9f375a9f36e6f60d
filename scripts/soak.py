#!/usr/bin/env python3
"""Memory soak of `livenessd run` (issue 15): a clip replayed in real time for MINUTES while CLIENTS
clients poll `status` once a second. Half the clients open a new connection for every poll (what a
monitoring script does; each connection once left 350-520 bytes behind), half keep one connection
open. The daemon's RSS is read from /proc every SAMPLE seconds.

Growth is measured after the warm-up (allocator arenas, Dispatch threads and the model's buffers
settle in the first minutes): the median of the last three samples minus the median of the three
samples ending at the warm-up. It exits 1 if that growth is above --limit-kb, if the daemon died,
or if a poll failed; the samples go to --csv.

    scripts/soak.py --binary .build/release/livenessd --clip /path/clip.mp4 --minutes 30

Python's standard library only: the soak is a measurement tool, not part of the product.
"""

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_line(sock, buffer):
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the daemon")
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line, rest


class Client(threading.Thread):
    def __init__(self, path, reconnect, stop):
        super().__init__(daemon=True)
        self.path, self.reconnect, self.stop = path, reconnect, stop
        self.polls = 0
        self.failures = []

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        return sock

    def poll(self, sock, buffer):
        sock.sendall(b'{"op":"status","id":"soak"}\n')
        line, buffer = read_line(sock, buffer)
        reply = json.loads(line)
        if reply.get("type") != "status":
            raise RuntimeError(f"unexpected reply {line[:120]!r}")
        return buffer

    def run(self):
        sock, buffer = None, b""
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if sock is None:
                    sock, buffer = self.connect(), b""
                buffer = self.poll(sock, buffer)
                self.polls += 1
                if self.reconnect:
                    sock.close()
                    sock = None
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                self.failures.append(f"{type(error).__name__}: {error}")
                if sock is not None:
                    sock.close()
                sock = None
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
        if sock is not None:
            sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=".build/release/livenessd")
    parser.add_argument("--clip", required=True, help="a video file; it is looped to last the soak")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--limit-kb", type=int, default=1024, help="allowed RSS growth after the warm-up")
    parser.add_argument("--csv", default="soak-rss.csv")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `run` arguments")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="livenessd-soak-")
    looped = os.path.join(work, "soak.mkv")
    # A stream copy, no re-encoding: the clip repeated until it outlasts the soak.
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", args.clip],
        check=True, capture_output=True, text=True)
    loops = int((args.minutes + 2) * 60 / float(probe.stdout.strip())) + 1
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", args.clip, "-c", "copy", "-an", looped],
        check=True)
    socket_path = os.path.join(work, "livenessd.sock")
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [args.binary, "run", "--source", looped, "--socket", socket_path, *args.extra],
        stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if os.path.exists(socket_path) or daemon.poll() is not None:
            break
        time.sleep(0.1)
    if daemon.poll() is not None:
        sys.exit(f"the daemon exited at start ({daemon.returncode}); log: {log.name}")

    stop = threading.Event()
    clients = [Client(socket_path, reconnect=(i % 2 == 0), stop=stop) for i in range(args.clients)]
    for client in clients:
        client.start()
    samples = []
    started = time.monotonic()
    print(f"soak: pid {daemon.pid}, {args.clients} clients, {args.minutes} min, samples every {args.sample} s",
          flush=True)
    while time.monotonic() - started < args.minutes * 60 and daemon.poll() is None:
        elapsed = time.monotonic() - started
        samples.append((round(elapsed, 1), rss_kb(daemon.pid), sum(c.polls for c in clients)))
        if len(samples) % 6 == 1:
            print(f"  {elapsed:7.0f} s  RSS {samples[-1][1]} kB  polls {samples[-1][2]}", flush=True)
        time.sleep(max(0.0, args.sample * len(samples) - (time.monotonic() - started)))
    stop.set()
    for client in clients:
        client.join(timeout=15)
    died = daemon.poll()
    if died is None:
        daemon.terminate()
        daemon.wait(timeout=30)

    with open(args.csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seconds", "rss_kb", "polls"])
        writer.writerows(samples)
    failures = [f for c in clients for f in c.failures]
    warm = [s for s in samples if s[0] <= args.warmup_minutes * 60][-3:]
    tail = samples[-3:]
    at_warm = statistics.median(s[1] for s in warm)
    at_end = statistics.median(s[1] for s in tail)
    after = [s[1] for s in samples if s[0] > args.warmup_minutes * 60]
    growth = at_end - at_warm
    print(f"soak: {len(samples)} samples, polls {sum(c.polls for c in clients)}, "
          f"connections {sum(c.polls for c in clients if c.reconnect) + sum(1 for c in clients if not c.reconnect)}, "
          f"failed polls {len(failures)}")
    print(f"soak: RSS at start {samples[0][1]} kB, at warm-up end {at_warm:.0f} kB, at end {at_end:.0f} kB, "
          f"after warm-up min {min(after)} max {max(after)} kB; growth after warm-up {growth:+.0f} kB "
          f"(limit {args.limit_kb} kB); samples in {args.csv}")
    ok = True
    if died is not None:
        print(f"soak: FAILED: the daemon exited early ({died}); log: {log.name}")
        ok = False
    if failures:
        print(f"soak: FAILED: {len(failures)} polls failed, first: {failures[0]}")
        ok = False
    if growth > args.limit_kb:
        print(f"soak: FAILED: RSS grew {growth:.0f} kB after the warm-up")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
