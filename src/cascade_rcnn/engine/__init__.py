"""Jobs that run a model over many inputs: prediction (and, later, training and evaluation)."""
