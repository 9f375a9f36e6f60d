// libFuzzer entry points for everything livenessd reads from files or peers (issue 15). Built only by
// scripts/fuzz.sh (LIVENESSD_FUZZ=1 adds this target to Package.swift; swiftc -sanitize=fuzzer,address);
// the target to fuzz is chosen by $LIVENESSD_FUZZ_TARGET:
//
//   pickle      RestrictedUnpickler.load (a torch.save zip's data.pkl)
//   legacy      LegacyTorchFile (pre-zip torch.save: several pickles, then raw storages)
//   checkpoint  TorchCheckpoint(data:) (the zip container, its entries, CRCs and tensors)
//   onnx        ONNXModel(data:) → ONNXGraph(model:) → prepare(inputShape:) (the detector's graph builder)
//   request     bytes a peer sends on the event socket, through the real ClientHandler on an EmbeddedChannel
//   config      Configuration.parse (the YAML config file, decoded and validated)
//
// SwiftPM gives an executable target its own `main` (this file's top-level code, at the end), so libFuzzer's
// `main` is never linked: the top-level code hands over to libFuzzer's driver, `LLVMFuzzerRunDriver`.
//
// Every input must end in a thrown error or a result: a trap, an ASan report, a leak, an allocation above
// -malloc_limit_mb or a hang above -timeout is a finding. Inputs given as file arguments are run once each
// (how scripts/fuzz.sh replays a corpus or a crash).

import Foundation
import Logging
import NIOCore
import NIOEmbedded

@testable import LivenessEngine
@testable import LivenessServer

enum FuzzTarget: String, CaseIterable {
    case pickle, legacy, checkpoint, onnx, request, config
}

nonisolated(unsafe) private var target = FuzzTarget.pickle
nonisolated(unsafe) private var server: EventServer?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let name = ProcessInfo.processInfo.environment["LIVENESSD_FUZZ_TARGET"] ?? ""
    guard let chosen = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("livenessd-fuzz: set LIVENESSD_FUZZ_TARGET to one of \(names)\n".utf8))
        exit(2)
    }
    target = chosen
    if chosen == .request {
        // Quiet: the server logs every close at info, and writing those lines was 3/4 of each run.
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        var configuration = EventServer.Configuration(path: "/nonexistent/fuzz.sock")
        configuration.clientQueueLimit = 64
        server = EventServer(
            configuration: configuration, threshold: 0.28,
            hooks: .init(
                status: {
                    EventProtocol.StatusMessage(
                        version: "fuzz", uptimeSeconds: 1, modelSHA256: "", models: [], threshold: 0.28, sources: [:])
                },
                subscribed: {}, reset: { _ in }),
            logger: logger)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    switch target {
    case .pickle:
        _ = try? RestrictedUnpickler.load(bytes)
    case .legacy:
        _ = try? LegacyTorchFile(bytes: bytes, path: "fuzz.pth")
    case .checkpoint:
        _ = try? TorchCheckpoint(data: Data(bytes), path: "fuzz.pt")
    case .onnx:
        if let model = try? ONNXModel(data: Data(bytes), path: "fuzz.onnx"), let graph = try? ONNXGraph(model: model) {
            try? graph.prepare(inputShape: [1, 3, 32, 32])
        }
    case .request:
        request(bytes)
    case .config:
        _ = try? Configuration.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz.yaml")
    }
    return 0
}

/// One admitted connection: the input arrives in two reads (split at its first byte's value, so the
/// fuzzer also explores lines cut across reads), then the peer hangs up.
private func request(_ bytes: [UInt8]) {
    guard let server else { return }
    let channel = EmbeddedChannel()
    let credentials = PeerCredentials(pid: 42, uid: getuid(), gid: getgid())
    do {
        try channel.pipeline.syncOperations.addHandler(
            ClientHandler(server: server) { $0.eventLoop.makeSucceededFuture(credentials) })
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/fuzz")).wait()
        channel.embeddedEventLoop.run()
        let split = bytes.isEmpty ? 0 : min(Int(bytes[0]), bytes.count)
        for part in [bytes[..<split], bytes[split...]] where !part.isEmpty {
            try channel.writeInbound(ByteBuffer(bytes: part))
            channel.embeddedEventLoop.run()
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
    } catch {}
    while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
    _ = try? channel.finish(acceptAlreadyClosed: true)
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var arguments = CommandLine.argc
var vector = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&arguments, &vector) { data, size in fuzzTestOneInput(data, size) })
