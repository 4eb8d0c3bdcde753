"""Where weights come from and go to: our checkpoints and MMDetection's (``.pth``, ``.safetensors``),
ImageNet backbone weights, the model zoo (configs with their published checkpoints), downloads into
the cache, and the Hugging Face Hub."""
