/// Presentation-attack-detection error rates on labelled scores (ISO/IEC 30107-3 terms).
/// Scores are spoof probabilities; a sample is called an attack iff score ≥ threshold.
public struct PADMetrics: Equatable {
    public var livenessCount: Int
    public var attackCount: Int
    /// Area under the ROC curve: the probability that a random attack scores above a random live
    /// sample, ties counting half (Mann–Whitney U / (n_attack · n_live)). nil without both classes.
    public var areaUnderCurve: Double?
    /// Attacks called live / attacks.
    public var attackErrorRate: Double?
    /// Live samples called attacks / live samples.
    public var bonaFideErrorRate: Double?

    public init(live: [Double], attacks: [Double], threshold: Double) {
        self.livenessCount = live.count
        self.attackCount = attacks.count
        self.attackErrorRate =
            attacks.isEmpty ? nil : Double(attacks.filter { $0 < threshold }.count) / Double(attacks.count)
        self.bonaFideErrorRate = live.isEmpty ? nil : Double(live.filter { $0 >= threshold }.count) / Double(live.count)
        self.areaUnderCurve = PADErrorRates.areaUnderCurve(attacks: attacks, bonaFide: live)
    }
}

/// The median (mean of the middle two for an even count); nil for none.
public func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
