"""Where weights come from and go to: our checkpoints and MMDetection's (``.pth``, ``.safetensors``),
Detectron2's (``.pkl``, ``.pth``, read into our layout), ImageNet backbone weights, the model zoo
(configs with their published checkpoints), downloads into the cache, and the Hugging Face Hub."""
