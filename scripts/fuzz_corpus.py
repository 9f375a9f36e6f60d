#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in Tests/Fuzz (scripts/fuzz.sh), made from the real files.

    scripts/fuzz_corpus.py OUTDIR        (reads $LIVENESSD_TEST_ASSETS, default ../shared)

Writes OUTDIR/<target>/<seed> for pickle, legacy, checkpoint, onnx, request and config. Seeds are kept
small (a few KB where the format allows): libFuzzer's speed falls with input size, and mutations of
a small valid file reach the same parsing code as those of the 2 MB published model. So the
checkpoint and legacy seeds are the published files' own pickles (their real keys, globals and
persistent ids) re-packed with storages cut down to a few values, in both torch.save layouts; the
ONNX seed is YuNet (230 KB) and a three-node graph built here with the same operators.

Python's standard library only (no torch, no onnx): CI runs this on a bare machine.
"""

import io
import os
import pickle
import struct
import sys
import zipfile

ASSETS = os.environ.get("LIVENESSD_TEST_ASSETS", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as handle:
        handle.write(data)


class Stub:
    """Stands for any global the real pickles name (torch._utils._rebuild_tensor_v2, torch.FloatStorage …)."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.__module__, self.__qualname__ = module, name

    def __reduce__(self):
        return self.name

    def __call__(self, *args):
        return Call(self, args)


class Call:
    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)

    def __setstate__(self, state):
        self.state = state


class Persistent:
    def __init__(self, pid):
        self.pid = pid


class Reader(pickle.Unpickler):
    """Reads a real torch pickle without torch: globals become stubs, persistent ids are kept."""

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        return Stub(module, name)

    def persistent_load(self, pid):
        return Persistent(pid)


class Writer(pickle.Pickler):
    """Writes persistent ids back as they were (stubs pickle as the globals they stand for)."""

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Persistent) else None


def dump(value):
    """Pickles `value` (protocol 2, as torch.save) with every stub written as its own global: pickle
    looks a global up in sys.modules, so each stub's module is put there for the duration."""
    stubs = []

    def collect(node):
        if isinstance(node, Stub):
            stubs.append(node)
        elif isinstance(node, Call):
            collect(node.function)
            for arg in node.args:
                collect(arg)
        elif isinstance(node, Persistent):
            collect(node.pid)
        elif isinstance(node, dict):
            for key, item in node.items():
                collect(key)
                collect(item)
        elif isinstance(node, (list, tuple)):
            for item in node:
                collect(item)

    collect(value)
    import types
    added = []
    for stub in stubs:
        if stub.module not in sys.modules:
            sys.modules[stub.module] = types.ModuleType(stub.module)
            added.append(stub.module)
        setattr(sys.modules[stub.module], stub.name, stub)
    buffer = io.BytesIO()
    try:
        Writer(buffer, protocol=2).dump(value)
    finally:
        for module in added:
            del sys.modules[module]
    return buffer.getvalue()


def shrink(value, keep, storages):
    """The same object with every tensor cut to its first `keep` values (shape [keep], stride [1]);
    storages[key] = (dtype name, element count) for every storage still referenced."""
    if isinstance(value, Call) and isinstance(value.function, Stub) and value.function.name == "_rebuild_tensor_v2":
        storage, _offset, _size, _stride, *rest = value.args
        pid = list(storage.pid)
        pid[4] = keep
        storages[pid[2]] = (pid[1].name, keep)
        return Call(value.function, (Persistent(tuple(pid)), 0, (keep,), (1,), *rest))
    if isinstance(value, dict):
        shrunk = type(value)()
        for key, item in value.items():
            shrunk[key] = shrink(item, keep, storages)
        return shrunk
    if isinstance(value, list):
        return [shrink(item, keep, storages) for item in value]
    if isinstance(value, tuple):
        return tuple(shrink(item, keep, storages) for item in value)
    return value


ELEMENT = {"FloatStorage": 4, "LongStorage": 8, "IntStorage": 4, "HalfStorage": 2, "DoubleStorage": 8}


def first_tensors(state, count):
    """The state dict with only its first `count` entries (seeds stay small)."""
    import collections
    return collections.OrderedDict(list(state.items())[:count])


def checkpoint_seeds(out):
    path = os.path.join(ASSETS, "models", "face-liveness-vit", "model.pt")
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        real_pickle = archive.read(name)
    write(out, "pickle", "vit-data.pkl", real_pickle)
    root = Reader(io.BytesIO(real_pickle)).load()
    storages = {}
    small = dict(root)
    small["model"] = shrink(first_tensors(root["model"], 6), 4, storages)
    pickled = dump(small)
    write(out, "pickle", "vit-small.pkl", pickled)

    def pack(stream, compression, force_zip64=False):
        with zipfile.ZipFile(stream, "w", compression) as archive:
            for entry, data in [("archive/data.pkl", pickled), ("archive/byteorder", b"little"),
                                ("archive/version", b"3\n")] + [
                    (f"archive/data/{key}", bytes(range(ELEMENT.get(kind, 4) * count)))
                    for key, (kind, count) in storages.items()]:
                with archive.open(zipfile.ZipInfo(entry), "w", force_zip64=force_zip64) as handle:
                    handle.write(data)

    class Unseekable(io.RawIOBase):
        """A stream zipfile cannot seek back in: it writes data descriptors, as torch.save does."""

        def __init__(self):
            self.buffer = io.BytesIO()

        def writable(self):
            return True

        def write(self, data):
            return self.buffer.write(data)

    for label, compression, unseekable, zip64 in [
            ("stored", zipfile.ZIP_STORED, False, False), ("deflated", zipfile.ZIP_DEFLATED, False, False),
            ("descriptors", zipfile.ZIP_STORED, True, False), ("zip64", zipfile.ZIP_STORED, True, True)]:
        stream = Unseekable() if unseekable else io.BytesIO()
        pack(stream, compression, zip64)
        data = stream.buffer.getvalue() if unseekable else stream.getvalue()
        write(out, "checkpoint", f"vit-small-{label}.pt", data)
        if label == "stored":
            # Cut before its directory: ZIPFoundation's in-memory reader leaked such files (fuzz finding).
            write(out, "checkpoint", "vit-small-truncated.pt", data[:len(data) // 2])


def legacy_seeds(out):
    for file in ["2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth"]:
        with open(os.path.join(ASSETS, "models", "silent-face", file), "rb") as handle:
            stream = io.BytesIO(handle.read())
        magic = Reader(stream).load()
        protocol = Reader(stream).load()
        sys_info = Reader(stream).load()
        state = Reader(stream).load()
        write(out, "pickle", f"{file}.state.pkl", pickle_slice(stream, file))
        storages = {}
        small = shrink(first_tensors(state, 8), 3, storages)
        body = b"".join(dump(part) for part in [magic, protocol, sys_info, small, list(storages)])
        for _key, (kind, count) in storages.items():
            body += struct.pack("<q", count) + bytes(range(ELEMENT.get(kind, 4) * count))
        write(out, "legacy", f"{file}.small.pth", body)
        # The real header pickles alone (the file cut before its storages).
        write(out, "legacy", f"{file}.header.pth", stream.getvalue()[:stream.tell()])


def pickle_slice(stream, _file):
    """The real state-dict pickle's bytes (between the sys_info pickle and the storage keys)."""
    data = stream.getvalue()
    probe = io.BytesIO(data)
    for _ in range(3):
        Reader(probe).load()
    start = probe.tell()
    Reader(probe).load()
    return data[start:probe.tell()]


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field (bytes, string or message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def integer(number, value):
    return varint(number << 3) + varint(value)


def onnx_seeds(out):
    with open(os.path.join(ASSETS, "models", "yunet", "face_detection_yunet.onnx"), "rb") as handle:
        write(out, "onnx", "yunet.onnx", handle.read())

    # input [1,3,32,32] → Conv(4, 3×3, pads 1) → Relu → MaxPool 2×2 → Transpose → Reshape [1,-1]
    def tensor(name, dims, floats=None, ints=None):
        body = b"".join(integer(1, d) for d in dims)
        if floats is not None:
            body += integer(2, 1) + field(9, struct.pack(f"<{len(floats)}f", *floats))
        else:
            body += integer(2, 7) + field(9, struct.pack(f"<{len(ints)}q", *ints))
        return body + field(8, name.encode())

    def ints_attribute(name, values):
        return field(1, name.encode()) + b"".join(integer(8, v) for v in values) + integer(20, 7)

    def node(op, inputs, outputs, attributes=()):
        return (b"".join(field(1, i.encode()) for i in inputs) + b"".join(field(2, o.encode()) for o in outputs)
                + field(3, (op + "_0").encode()) + field(4, op.encode()) + b"".join(field(5, a) for a in attributes))

    def value_info(name, dims):
        shape = b"".join(field(1, integer(1, d)) for d in dims)
        return field(1, name.encode()) + field(2, field(1, integer(1, 1) + field(2, shape)))

    graph = b"".join([
        field(1, node("Conv", ["input", "w", "b"], ["c"],
                      [ints_attribute("kernel_shape", [3, 3]), ints_attribute("pads", [1, 1, 1, 1])])),
        field(1, node("Relu", ["c"], ["r"])),
        field(1, node("MaxPool", ["r"], ["p"], [ints_attribute("kernel_shape", [2, 2]),
                                                 ints_attribute("strides", [2, 2])])),
        field(1, node("Transpose", ["p"], ["t"], [ints_attribute("perm", [0, 2, 3, 1])])),
        field(1, node("Reshape", ["t", "shape"], ["output"])),
        field(2, b"seed"),
        field(5, tensor("w", [4, 3, 3, 3], floats=[((i * 7) % 11 - 5) / 10 for i in range(108)])),
        field(5, tensor("b", [4], floats=[0.1, -0.2, 0.3, 0.0])),
        field(5, tensor("shape", [2], ints=[1, -1])),
        field(11, value_info("input", [1, 3, 32, 32])),
        field(12, value_info("output", [1, 1024])),
    ])
    model = integer(1, 7) + field(8, field(1, b"") + integer(2, 13)) + field(7, graph)
    write(out, "onnx", "small.onnx", model)


def request_seeds(out):
    lines = [
        b'{"op":"status","id":"1"}\n',
        b'{"op":"subscribe","mode":"changes","heartbeat_seconds":1}\n',
        b'{"op":"subscribe","mode":"all","sources":["camera"]}\n{"op":"snapshot"}\n',
        b'{"op":"reset","sources":["camera"]}\n{"op":"reset"}\n',
        b'{"op":"verify","id":"door-7","source":"camera","timeout_ms":5000}\n{"op":"verify","timeout_ms":1e300}\n',
        b'{"op":"subscribe","heartbeat_seconds":1e16}\n',
        b'\x05{"op":"status"}\n{"op":"nope"}\nnot json\n\n',
        b'{"op":"snapshot","id":17}\n' * 3,
    ]
    for index, line in enumerate(lines):
        write(out, "request", f"request-{index}", line)


def config_seeds(out):
    here = os.path.join(os.path.dirname(__file__), "..", "samples", "livenessd.yaml")
    with open(here, "rb") as handle:
        write(out, "config", "livenessd.yaml", handle.read())
    for index, text in enumerate([
            b"threshold: 0.3\ndecision: {window_frames: 10, min_frames: 5, smoothing: ema, ema_alpha: 0.5}\n",
            b"models: [vit]\ncrop: {mode: detect, scale: 2.0}\nfusion: {vit: 1, minifasnet: 2}\n",
            b"socket: {path: /run/x.sock, mode: '0660', max_clients: 10, idle_timeout_seconds: 5}\n"
            b"access: {allow_uids: [1000], controller_gids: [27]}\n",
            b"trusted_sha256: [" + b"a" * 64 + b"]\nsources: [/dev/video0, rtsp://camera/stream]\n",
            # A base-60 integer that overflows: Yams trapped on it (fuzz finding).
            b"decision: {window_frames: 1:0:0:0:0:0:0:0:0:0:0}\n",
            b"cameras:\n  - {name: door, device: /dev/video0, size: 640x480, fps: 30, format: yuyv}\n"
            b"  - {name: lobby, url: 'rtsp://camera/stream'}\n"
            b"verify: {min_seconds: 1, min_frames: 15, stable_frames: 10, timeout_seconds: 5, save_failed: /tmp/x}\n",
            b"mqtt: {host: broker.lan, port: 8883, qos: 2, topic_prefix: site/door-1, queue_limit: 10,\n"
            b"       stats_interval_seconds: 0.5, homeassistant: true, discovery_prefix: ha, keepalive_seconds: 20}\n"
            b"metrics: {listen: '[::1]:9464', enabled: true}\n",
    ]):
        write(out, "config", f"config-{index}.yaml", text)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/fuzz_corpus.py OUTDIR")
    out = sys.argv[1]
    checkpoint_seeds(out)
    legacy_seeds(out)
    onnx_seeds(out)
    request_seeds(out)
    config_seeds(out)
    for target in sorted(os.listdir(out)):
        files = os.listdir(os.path.join(out, target))
        size = sum(os.path.getsize(os.path.join(out, target, f)) for f in files)
        print(f"fuzz_corpus: {target}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
