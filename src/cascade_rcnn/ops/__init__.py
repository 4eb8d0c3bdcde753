"""Tensor operations shared by the models: box encoding, NMS, mask pasting."""
