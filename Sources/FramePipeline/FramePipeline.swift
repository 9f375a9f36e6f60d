// FramePipeline — how frames move from a FrameSource through detection, preprocessing, inference
// and the decision state machine (docs/ARCHITECTURE.md). The stages, queues and backpressure
// policies arrive with the daemon work (issue "The daemon: backpressured pipeline …"); until then
// `livenessd classify` calls CaptureKit and LivenessEngine directly. This file only holds the
// module's namespace so the customer's layout builds.

/// Namespace for the pipeline's types.
public enum FramePipeline {}
