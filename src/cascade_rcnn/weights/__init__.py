"""Where weights come from and go to: our checkpoints and MMDetection's, ImageNet backbone
weights, and the model zoo (configs with their published checkpoints)."""
