#!/usr/bin/env python3
"""A door controller for livenessd (standard library only): one verification per badge swipe.

    python3 samples/door_controller.py [--socket PATH] [--source ID] [--timeout-ms 5000] [--json]

Each line on standard input stands for a badge swipe (a real controller would read its badge
reader here); a non-empty line is used as the transaction id. For each swipe the controller asks
the daemon for one verdict ({"op": "verify"}, docs/PROTOCOL.md) and prints one line:

    OPEN door-7 live smoothed=0.0412 vit=0.0104 minifasnet=0.0920 frames=31 elapsed_ms=1043.2
    REFUSED door-8 spoof smoothed=0.8120 ... (the attack alarm)
    REFUSED door-9 timeout smoothed=0.3010 ... reason: the smoothed score did not stay outside ...

Only `live` opens. `spoof` refuses with an alarm; `no_face`, `unusable` and `timeout` refuse
quietly (ask the person to look at the camera and swipe again). With --json the daemon's answer
is printed as it came, one JSON object per line. The connection is made again for every swipe,
so a daemon restart between two swipes is harmless; a swipe that finds no daemon is refused
with the reason (fail closed: the door never opens without a `live` answer).

Verify needs the controller role: run this as root, as the daemon's user, or as a user listed in
the daemon's access.controller_uids / controller_gids.
"""
import argparse
import json
import os
import socket
import sys
import time

DEFAULT_SOCKET = (
    os.path.join(os.environ["XDG_RUNTIME_DIR"], "livenessd", "livenessd.sock")
    if os.getuid() != 0 and os.environ.get("XDG_RUNTIME_DIR", "").startswith("/")
    else "/run/livenessd/livenessd.sock"
)


def verify(path, transaction_id, source, timeout_ms):
    """One transaction: the daemon's answer as a dict, or an error dict (outcome "error"). A daemon that is
    still starting its source is asked again until the timeout has passed."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        answer = verify_once(path, transaction_id, source, timeout_ms)
        starting = "has not started yet" in (answer.get("reason") or "")
        if answer.get("outcome") != "error" or not starting or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def verify_once(path, transaction_id, source, timeout_ms):
    request = {"op": "verify", "id": transaction_id, "timeout_ms": timeout_ms}
    if source:
        request["source"] = source
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            # The answer comes at the latest when the transaction times out; allow for the daemon's queues.
            connection.settimeout(timeout_ms / 1000 + 10)
            connection.connect(path)
            stream = connection.makefile("rw", encoding="utf-8")
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            for line in stream:
                answer = json.loads(line)
                if answer.get("type") == "verify" and answer.get("id") == transaction_id:
                    return answer
                if answer.get("type") in ("error", "bye"):
                    return {"outcome": "error", "id": transaction_id, "reason": answer.get("error")}
            return {"outcome": "error", "id": transaction_id, "reason": "the daemon closed the connection"}
    except (OSError, ValueError) as error:
        return {"outcome": "error", "id": transaction_id, "reason": f"cannot reach livenessd at {path}: {error}"}


def describe(answer):
    scores = answer.get("scores") or {}
    parts = [f"smoothed={answer['smoothed']:.4f}" if answer.get("smoothed") is not None else "smoothed=none"]
    parts += [f"{name}={value:.4f}" for name, value in sorted(scores.items())]
    if "frames" in answer:
        parts.append(f"frames={answer['frames']}")
    if "elapsed_ms" in answer:
        parts.append(f"elapsed_ms={answer['elapsed_ms']}")
    if answer.get("reason"):
        parts.append(f"reason: {answer['reason']}")
    return " ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--source", help="the source to judge (needed when the daemon watches several)")
    parser.add_argument("--timeout-ms", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print the daemon's answers as JSON lines")
    arguments = parser.parse_args()
    count = 0
    for line in sys.stdin:
        count += 1
        transaction_id = line.strip() or f"swipe-{count}"
        answer = verify(arguments.socket, transaction_id, arguments.source, arguments.timeout_ms)
        if arguments.json:
            print(json.dumps(answer, sort_keys=True), flush=True)
            continue
        outcome = answer.get("outcome")
        verdict = "OPEN" if outcome == "live" else "REFUSED"
        print(f"{verdict} {transaction_id} {outcome} {describe(answer)}", flush=True)


if __name__ == "__main__":
    main()
