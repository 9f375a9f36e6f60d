import Foundation
import LivenessEngine

/// A face detector model loaded once and the locator settings; makes one `DetectorLocator` per source
/// lane (a locator keeps the detector's buffers and is not thread-safe, the model is only read).
public struct FaceLocatorFactory: Sendable {
    /// The model file, for logs and reports.
    public var url: URL
    public var model: ONNXModel
    public var configuration: DetectorLocator.Configuration

    public init(url: URL, model: ONNXModel, configuration: DetectorLocator.Configuration) {
        self.url = url
        self.model = model
        self.configuration = configuration
    }

    public func makeLocator() throws -> DetectorLocator {
        DetectorLocator(detector: try FaceDetector(model: self.model), configuration: self.configuration)
    }
}
