import Foundation

/// The models that can judge a face. Each gives its own spoof probability (an opinion); the
/// decision runs on their fusion.
public enum OpinionKind: String, Sendable, Equatable, Hashable, CaseIterable, Codable {
    /// The face-liveness ViT (grey 224² crop; spoof iff p ≥ its checkpoint threshold when alone).
    case vit
    /// Silent-Face's MiniFASNetV2 (2.7×) + MiniFASNetV1SE (4.0×) on BGR 80² crops; spoof
    /// probability = 1 − mean of the two real-class probabilities, as upstream combines them.
    case minifasnet
}

/// One frame's spoof probability per opinion (nil: that model is not in use).
public struct OpinionScores: Sendable, Equatable, Codable {
    public var vit: Double?
    public var minifasnet: Double?

    public init(vit: Double? = nil, minifasnet: Double? = nil) {
        self.vit = vit
        self.minifasnet = minifasnet
    }

    /// The same scores with any non-finite one left out (JSON has no NaN).
    public var finite: OpinionScores {
        OpinionScores(
            vit: self.vit.flatMap { $0.isFinite ? $0 : nil },
            minifasnet: self.minifasnet.flatMap { $0.isFinite ? $0 : nil })
    }

    public subscript(kind: OpinionKind) -> Double? {
        get {
            switch kind {
            case .vit: return self.vit
            case .minifasnet: return self.minifasnet
            }
        }
        set {
            switch kind {
            case .vit: self.vit = newValue
            case .minifasnet: self.minifasnet = newValue
            }
        }
    }
}

/// The fused spoof probability: the weighted mean of the opinions' logits, back through the
/// logistic function. Averaging logits (not probabilities) lets a confident opinion count for
/// more than a hesitant one, and with one opinion the fused score is that opinion's probability.
/// Measured on the shared material by the issue that introduced the pair: stills AUC 0.80 (ViT),
/// 0.83 (pair), 0.85 (mean of the two logits); clips 0.94 / 1.00 / 1.00.
public struct ScoreFusion: Sendable, Equatable {
    /// Weight of each opinion in use; missing kinds weigh 1.
    public var weights: [OpinionKind: Double]

    /// The logits are clamped to ±`logitLimit`: float32 softmax outputs reach exactly 0 or 1, and one
    /// saturated model must not make the other irrelevant (|logit| 16 ≈ p 1.1·10⁻⁷).
    public static let logitLimit = 16.0

    public init(weights: [OpinionKind: Double] = [:]) {
        self.weights = weights
    }

    public func weight(_ kind: OpinionKind) -> Double { self.weights[kind] ?? 1 }

    /// The fused probability of the opinions present; nil when none is, or a score is not finite.
    public func fuse(_ scores: OpinionScores) -> Double? {
        var total = 0.0
        var weightSum = 0.0
        for kind in OpinionKind.allCases {
            guard let probability = scores[kind] else { continue }
            guard probability.isFinite else { return nil }
            let weight = self.weight(kind)
            total += weight * Self.logit(probability)
            weightSum += weight
        }
        guard weightSum > 0 else { return nil }
        return Self.sigmoid(total / weightSum)
    }

    /// log(p / (1 − p)), clamped to ±`logitLimit`.
    public static func logit(_ probability: Double) -> Double {
        let clamped = min(max(probability, 0), 1)
        let value = log(clamped) - log1p(-clamped)
        return min(max(value, -Self.logitLimit), Self.logitLimit)
    }

    public static func sigmoid(_ logit: Double) -> Double {
        logit >= 0 ? 1 / (1 + exp(-logit)) : exp(logit) / (1 + exp(logit))
    }
}
