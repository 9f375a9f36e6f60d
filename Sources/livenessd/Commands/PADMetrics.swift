/// Presentation-attack-detection error rates on labelled scores (ISO/IEC 30107-3 terms).
/// Scores are spoof probabilities; a sample is called an attack iff score ≥ threshold.
struct PADMetrics: Equatable {
    var livenessCount: Int
    var attackCount: Int
    /// Area under the ROC curve: the probability that a random attack scores above a random live
    /// sample, ties counting half (Mann–Whitney U / (n_attack · n_live)). nil without both classes.
    var areaUnderCurve: Double?
    /// Attacks called live / attacks.
    var attackErrorRate: Double?
    /// Live samples called attacks / live samples.
    var bonaFideErrorRate: Double?

    init(live: [Double], attacks: [Double], threshold: Double) {
        self.livenessCount = live.count
        self.attackCount = attacks.count
        self.attackErrorRate = attacks.isEmpty ? nil : Double(attacks.filter { $0 < threshold }.count) / Double(attacks.count)
        self.bonaFideErrorRate = live.isEmpty ? nil : Double(live.filter { $0 >= threshold }.count) / Double(live.count)
        self.areaUnderCurve = PADErrorRates.areaUnderCurve(attacks: attacks, bonaFide: live)
    }
}

/// The median (mean of the middle two for an even count); nil for none.
func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
