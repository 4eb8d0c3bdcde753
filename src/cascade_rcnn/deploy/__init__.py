"""Getting a trained model out of Python: ONNX export, and running the exported file."""
