import Foundation

/// One labelled score: a frame's spoof probability, or a presentation's score. Called an attack
/// iff score ≥ threshold (the daemon's rule).
struct LabelledScore: Sendable, Equatable {
    var score: Double
    var label: PresentationLabel
    /// Attack species; nil for bona fide.
    var species: String?
}

/// k errors out of n, with a 95 % Clopper–Pearson (exact binomial) interval.
public struct Proportion: Codable, Sendable, Equatable {
    public var value: Double?
    public var errors: Int
    public var total: Int
    /// [lower, upper]; nil when total is 0.
    public var ci95: [Double]?

    init(errors: Int, total: Int) {
        self.errors = errors
        self.total = total
        guard total > 0 else {
            self.value = nil
            self.ci95 = nil
            return
        }
        self.value = Double(errors) / Double(total)
        let interval = BinomialInterval.clopperPearson(errors: errors, total: total)
        self.ci95 = [interval.lower, interval.upper]
    }
}

/// A rate that is not one binomial proportion (ACER, EER, AUC), with the interval and how it was made.
public struct DerivedRate: Codable, Sendable, Equatable {
    public var value: Double?
    public var ci95: [Double]?
    public var threshold: Double?
}

/// ISO/IEC 30107-3 error rates at one threshold.
public struct OperatingPoint: Codable, Sendable, Equatable {
    public var threshold: Double
    /// Attacks called bona fide / attacks, per attack species.
    public var apcerBySpecies: [String: Proportion]
    /// All attacks pooled.
    public var apcerPooled: Proportion
    /// The species with the highest APCER (ISO's APCER for the test), and its rate.
    public var apcerWorstSpecies: String?
    public var apcerWorst: Proportion?
    /// Bona fide presentations called attacks / bona fide presentations.
    public var bpcer: Proportion
    /// (worst-species APCER + BPCER) / 2; interval = the same mean of the two intervals' bounds.
    public var acer: DerivedRate

    enum CodingKeys: String, CodingKey {
        case threshold, bpcer, acer
        case apcerBySpecies = "apcer_by_species"
        case apcerPooled = "apcer_pooled"
        case apcerWorstSpecies = "apcer_worst_species"
        case apcerWorst = "apcer_worst"
    }

    init(scores: [LabelledScore], threshold: Double) {
        self.threshold = threshold
        var bySpecies: [String: (errors: Int, total: Int)] = [:]
        var attackErrors = 0
        var attacks = 0
        var bonaFideErrors = 0
        var bonaFide = 0
        for item in scores {
            switch item.label {
            case .attack:
                let missed = item.score < threshold
                attacks += 1
                if missed { attackErrors += 1 }
                bySpecies[item.species ?? "unknown", default: (0, 0)].total += 1
                if missed { bySpecies[item.species ?? "unknown", default: (0, 0)].errors += 1 }
            case .bonaFide:
                bonaFide += 1
                if item.score >= threshold { bonaFideErrors += 1 }
            }
        }
        self.apcerBySpecies = bySpecies.mapValues { Proportion(errors: $0.errors, total: $0.total) }
        self.apcerPooled = Proportion(errors: attackErrors, total: attacks)
        // Worst species: highest rate; ties go to the larger species (more evidence), then by name.
        let worst = bySpecies.max { a, b in
            let ra = Double(a.value.errors) / Double(a.value.total)
            let rb = Double(b.value.errors) / Double(b.value.total)
            if ra != rb { return ra < rb }
            if a.value.total != b.value.total { return a.value.total < b.value.total }
            return a.key > b.key
        }
        self.apcerWorstSpecies = worst?.key
        self.apcerWorst = worst.map { Proportion(errors: $0.value.errors, total: $0.value.total) }
        self.bpcer = Proportion(errors: bonaFideErrors, total: bonaFide)
        if let apcer = self.apcerWorst, let a = apcer.value, let b = self.bpcer.value, let ia = apcer.ci95,
            let ib = self.bpcer.ci95
        {
            self.acer = DerivedRate(
                value: (a + b) / 2, ci95: [(ia[0] + ib[0]) / 2, (ia[1] + ib[1]) / 2], threshold: threshold)
        } else {
            self.acer = DerivedRate(value: nil, ci95: nil, threshold: threshold)
        }
    }
}

/// BPCER at the threshold that keeps (pooled) APCER at or below a target.
public struct BPCERAtAPCER: Codable, Sendable, Equatable {
    /// The APCER target (0.01 for BPCER100, 0.05 for BPCER20, 0.1 for BPCER10).
    public var targetAPCER: Double
    /// The largest threshold whose APCER ≤ target (nil: none needed, every attack may pass).
    public var threshold: Double?
    public var apcer: Proportion
    public var bpcer: Proportion

    enum CodingKeys: String, CodingKey {
        case threshold, apcer, bpcer
        case targetAPCER = "target_apcer"
    }
}

/// Threshold-free figures: the DET sweep, EER, AUC, BPCER at fixed APCERs.
public struct CurveMetrics: Codable, Sendable, Equatable {
    /// Mean of APCER and BPCER at the threshold (among observed scores, and +∞) where they are
    /// closest; interval = mean of their Clopper–Pearson bounds there.
    public var eer: DerivedRate
    /// Probability that a random attack scores above a random bona fide sample (ties: half);
    /// 95 % interval by Hanley & McNeil (1982).
    public var auc: DerivedRate
    public var bpcerAtAPCER: [BPCERAtAPCER]

    enum CodingKeys: String, CodingKey {
        case eer, auc
        case bpcerAtAPCER = "bpcer_at_apcer"
    }
}

/// One point of the DET sweep.
struct DETPoint: Sendable, Equatable {
    var threshold: Double  // +∞ for "everything is bona fide"
    var apcer: Double
    var bpcer: Double
}

/// Which APCER a calibrated threshold keeps at or below its target.
public enum CalibrationRule: String, Codable, Sendable, CaseIterable {
    /// Every attack species on its own (the default: ISO/IEC 30107-3 reports APCER per species).
    case worstSpecies = "worst-species"
    /// All attacks pooled.
    case pooled
}

/// Error-rate computations over labelled scores (pooled attacks for the threshold sweeps).
enum PADErrorRates {
    static let apcerTargets = [0.01, 0.05, 0.10]

    /// APCER/BPCER at every distinct score and at +∞, thresholds ascending. Empty without both classes.
    static func sweep(_ scores: [LabelledScore]) -> [DETPoint] {
        let attacks = scores.filter { $0.label == .attack }.map(\.score).sorted()
        let bonaFide = scores.filter { $0.label == .bonaFide }.map(\.score).sorted()
        guard !attacks.isEmpty, !bonaFide.isEmpty else { return [] }
        let thresholds = Array(Set(attacks + bonaFide)).sorted() + [Double.infinity]
        return thresholds.map { threshold in
            let attacksBelow = Self.countBelow(attacks, threshold)
            let bonaFideAtOrAbove = bonaFide.count - Self.countBelow(bonaFide, threshold)
            return DETPoint(
                threshold: threshold, apcer: Double(attacksBelow) / Double(attacks.count),
                bpcer: Double(bonaFideAtOrAbove) / Double(bonaFide.count))
        }
    }

    /// Elements of sorted `values` strictly below `threshold`.
    static func countBelow(_ values: [Double], _ threshold: Double) -> Int {
        var low = 0
        var high = values.count
        while low < high {
            let middle = (low + high) / 2
            if values[middle] < threshold { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The largest threshold with pooled APCER ≤ `target`: the (⌊target·N⌋+1)-th smallest attack
    /// score; nil when every attack may pass (target ≥ 1).
    static func threshold(forAPCER target: Double, attacks: [Double]) -> Double? {
        let sorted = attacks.sorted()
        let allowed = Int((target * Double(sorted.count) + 1e-9).rounded(.down))
        return allowed < sorted.count ? sorted[allowed] : nil
    }

    /// The threshold a calibration proposes: the largest one that keeps APCER ≤ `target` under
    /// `rule`, then lowered to a 6-decimal value at least 5·10⁻⁷ below it. The snippet writes 6
    /// decimals, and rounding to nearest once moved a proposal past the attack it was chosen to
    /// reject (0.1887366… written as 0.188737, and that replay clip then reached `live`). The margin
    /// also absorbs the last-bit differences of the daemon's own comparison. Lowering a threshold
    /// can only reject more attacks, so the promise holds; nil when every attack may pass.
    static func calibratedThreshold(forAPCER target: Double, attacks: [LabelledScore], rule: CalibrationRule) -> Double?
    {
        let exact: Double?
        switch rule {
        case .pooled:
            exact = Self.threshold(forAPCER: target, attacks: attacks.map(\.score))
        case .worstSpecies:
            // Each species keeps its own APCER ≤ target (ISO/IEC 30107-3 reports APCER per PAI species):
            // the lowest of the per-species thresholds.
            let bySpecies = Dictionary(grouping: attacks) { $0.species ?? "unknown" }
            exact = bySpecies.values.compactMap { Self.threshold(forAPCER: target, attacks: $0.map(\.score)) }.min()
        }
        return exact.map(Self.publishable)
    }

    /// `threshold` lowered to 6 decimals with a margin of at least 5·10⁻⁷ (never below 0).
    static func publishable(_ threshold: Double) -> Double {
        max(0, (threshold * 1e6 - 0.5).rounded(.down) / 1e6)
    }

    static func curve(_ scores: [LabelledScore]) -> CurveMetrics {
        let attacks = scores.filter { $0.label == .attack }.map(\.score)
        let bonaFide = scores.filter { $0.label == .bonaFide }.map(\.score)
        let points = Self.sweep(scores)
        var eer = DerivedRate(value: nil, ci95: nil, threshold: nil)
        if let best = points.enumerated().min(by: {
            let a = abs($0.element.apcer - $0.element.bpcer)
            let b = abs($1.element.apcer - $1.element.bpcer)
            return a != b ? a < b : $0.offset < $1.offset
        })?.element {
            let apcer = Proportion(errors: Int((best.apcer * Double(attacks.count)).rounded()), total: attacks.count)
            let bpcer = Proportion(errors: Int((best.bpcer * Double(bonaFide.count)).rounded()), total: bonaFide.count)
            eer = DerivedRate(
                value: (best.apcer + best.bpcer) / 2,
                ci95: [(apcer.ci95![0] + bpcer.ci95![0]) / 2, (apcer.ci95![1] + bpcer.ci95![1]) / 2],
                threshold: best.threshold.isFinite ? best.threshold : nil)
        }
        var auc = DerivedRate(value: nil, ci95: nil, threshold: nil)
        if let area = Self.areaUnderCurve(attacks: attacks, bonaFide: bonaFide) {
            let nA = Double(attacks.count)
            let nB = Double(bonaFide.count)
            let q1 = area / (2 - area)
            let q2 = 2 * area * area / (1 + area)
            let variance =
                (area * (1 - area) + (nA - 1) * (q1 - area * area) + (nB - 1) * (q2 - area * area)) / (nA * nB)
            let half = 1.959964 * max(0, variance).squareRoot()
            auc = DerivedRate(value: area, ci95: [max(0, area - half), min(1, area + half)], threshold: nil)
        }
        let sortedBonaFide = bonaFide.sorted()
        let atAPCER =
            attacks.isEmpty || bonaFide.isEmpty
            ? []
            : Self.apcerTargets.map { target -> BPCERAtAPCER in
                let threshold = Self.threshold(forAPCER: target, attacks: attacks)
                let limit = threshold ?? .infinity
                let missed = attacks.filter { $0 < limit }.count
                let rejected = sortedBonaFide.count - Self.countBelow(sortedBonaFide, limit)
                return BPCERAtAPCER(
                    targetAPCER: target, threshold: threshold, apcer: Proportion(errors: missed, total: attacks.count),
                    bpcer: Proportion(errors: rejected, total: bonaFide.count))
            }
        return CurveMetrics(eer: eer, auc: auc, bpcerAtAPCER: atAPCER)
    }

    /// Mann–Whitney U / (n_attack · n_bona_fide), midranks for ties: O(n log n).
    static func areaUnderCurve(attacks: [Double], bonaFide: [Double]) -> Double? {
        guard !attacks.isEmpty, !bonaFide.isEmpty else { return nil }
        let pooled = (bonaFide.map { ($0, false) } + attacks.map { ($0, true) }).sorted { $0.0 < $1.0 }
        var attackRankSum = 0.0
        var start = 0
        while start < pooled.count {
            var end = start
            while end + 1 < pooled.count && pooled[end + 1].0 == pooled[start].0 { end += 1 }
            let midrank = Double(start + end) / 2 + 1
            for index in start...end where pooled[index].1 { attackRankSum += midrank }
            start = end + 1
        }
        let n = Double(attacks.count)
        return (attackRankSum - n * (n + 1) / 2) / (n * Double(bonaFide.count))
    }
}

/// Exact binomial confidence intervals. Hand-written: no mirrored Swift package has the incomplete
/// beta function; this is the textbook continued fraction (Lentz), inverted by bisection.
enum BinomialInterval {
    /// Clopper–Pearson: lower = B⁻¹(α/2; k, n−k+1), upper = B⁻¹(1−α/2; k+1, n−k).
    static func clopperPearson(errors k: Int, total n: Int, confidence: Double = 0.95) -> (lower: Double, upper: Double)
    {
        precondition(n > 0 && k >= 0 && k <= n)
        let alpha = 1 - confidence
        let lower = k == 0 ? 0 : Self.betaQuantile(alpha / 2, Double(k), Double(n - k + 1))
        let upper = k == n ? 1 : Self.betaQuantile(1 - alpha / 2, Double(k + 1), Double(n - k))
        return (lower, upper)
    }

    /// x with I_x(a, b) = p, by bisection (I is increasing in x); 1e-12 absolute.
    static func betaQuantile(_ p: Double, _ a: Double, _ b: Double) -> Double {
        var low = 0.0
        var high = 1.0
        for _ in 0..<200 {
            let middle = (low + high) / 2
            if Self.regularizedIncompleteBeta(middle, a, b) < p { low = middle } else { high = middle }
            if high - low < 1e-13 { break }
        }
        return (low + high) / 2
    }

    /// I_x(a, b), the regularized incomplete beta function.
    static func regularizedIncompleteBeta(_ x: Double, _ a: Double, _ b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logFront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x)
        let front = exp(logFront)
        // The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
        if x < (a + 1) / (a + b + 2) { return front * Self.continuedFraction(x, a, b) / a }
        return 1 - front * Self.continuedFraction(1 - x, b, a) / b
    }

    private static func continuedFraction(_ x: Double, _ a: Double, _ b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...300 {
            let m = Double(m)
            var numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let step = d * c
            h *= step
            if abs(step - 1) < 1e-15 { break }
        }
        return h
    }
}
