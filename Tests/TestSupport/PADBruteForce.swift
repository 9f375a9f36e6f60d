/// PAD error rates by brute force, the reference the eval metrics are checked against: every
/// candidate threshold counted directly, AUC over every pair.
public struct PADBruteForce {
    public let live: [Double]
    public let attacks: [Double]

    public init(live: [Double], attacks: [Double]) {
        self.live = live
        self.attacks = attacks
    }

    public func rates(_ t: Double) -> (apcer: Double, bpcer: Double) {
        (
            Double(attacks.filter { $0 < t }.count) / Double(attacks.count),
            Double(live.filter { $0 >= t }.count) / Double(live.count)
        )
    }
    public var candidates: [Double] { Array(Set(live + attacks)).sorted() + [.infinity] }
    public var eer: Double {
        var best = (gap: Double.infinity, value: 0.0)
        for t in self.candidates {
            let r = self.rates(t)
            if abs(r.apcer - r.bpcer) < best.gap { best = (abs(r.apcer - r.bpcer), (r.apcer + r.bpcer) / 2) }
        }
        return best.value
    }
    public var auc: Double {
        var wins = 0.0
        for a in attacks { for b in live { wins += a > b ? 1 : (a == b ? 0.5 : 0) } }
        return wins / Double(attacks.count * live.count)
    }
    public func bpcer(atAPCER target: Double) -> Double {
        self.candidates.filter { self.rates($0).apcer <= target + 1e-12 }.map { self.rates($0).bpcer }.min()!
    }
}
