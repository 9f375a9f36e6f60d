#!/usr/bin/env python3
"""Minimal livenessd client: subscribes and prints state changes (standard library only).

    python3 samples/watch_events.py [/run/livenessd/livenessd.sock]

A door controller would act on `decision` events whose `changed` is true: open on "live",
alarm on "spoof", and send {"op": "reset"} when a new transaction starts. See docs/PROTOCOL.md.
"""
import json
import socket
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/run/livenessd/livenessd.sock"
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.connect(path)
    stream = connection.makefile("rw", encoding="utf-8")
    stream.write(json.dumps({"op": "subscribe", "mode": "changes", "heartbeat_seconds": 5}) + "\n")
    stream.flush()
    for line in stream:
        event = json.loads(line)
        if event["type"] == "decision":
            print(f'{event["source"]}: {event["state"]} (smoothed {event.get("smoothed")}, {event.get("reason") or ""})')
        elif event["type"] == "source":
            print(f'{event["source"]}: {event["kind"]} {event.get("reason") or ""}')
        elif event["type"] in ("bye", "error"):
            print("daemon:", event.get("error"))
            break
