import Foundation
import TestSupport
import Testing

/// `classify --crop full` on every JPEG still agrees with the PyTorch reference
/// (Tests/Fixtures/reference_stills.tsv, written by scripts/reference_stills.py).
@Suite struct ReferenceStillsTests {
    static let tolerance = 0.005

    /// (path under the assets root, reference spoof probability) per row.
    static func rows() throws -> [(path: String, probability: Double)] {
        let url = TestAssets.packageRoot.appendingPathComponent("Tests/Fixtures/reference_stills.tsv")
        return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#") else { return nil }
            let fields = line.split(separator: "\t")
            guard fields.count == 2, let probability = Double(fields[1]) else { return nil }
            return (String(fields[0]), probability)
        }
    }

    @Test func classifyMatchesTheReferenceOnEveryJPEG() throws {
        let rows = try Self.rows()
        #expect(rows.count >= 50, "reference_stills.tsv has \(rows.count) rows")
        let paths = try rows.map { try TestAssets.file($0.path).path }
        let model = try TestAssets.modelURL.path
        let output = try Binary.run(
            ["classify", "--json", "--crop", "full", "--models", "vit", "--model", model] + paths)
        #expect(output.status == 0, "stderr: \(output.standardError)")
        let results = output.standardOutput.split(separator: "\n").map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:]
        }
        try #require(results.count == rows.count)
        var worst = (difference: 0.0, path: "")
        for (row, (path, result)) in zip(rows, zip(paths, results)) {
            #expect(result["path"] as? String == path)
            guard let probability = result["spoof_probability"] as? Double else {
                Issue.record("\(row.path): no probability (\(result))")
                continue
            }
            let difference = abs(probability - row.probability)
            #expect(difference <= Self.tolerance, "\(row.path): \(probability) vs reference \(row.probability)")
            if difference > worst.difference { worst = (difference, row.path) }
        }
        print("reference stills: \(rows.count) JPEGs, max |Δp| = \(worst.difference) (\(worst.path))")
    }
}
