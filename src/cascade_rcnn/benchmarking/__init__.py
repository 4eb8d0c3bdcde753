"""What the benchmark command, benchmarks/ and tools/ share: timing and memory, synthetic
scenes and weights whose detections spread like a trained model's, and detection agreement."""
