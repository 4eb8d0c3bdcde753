"""Jobs that run a model over many inputs: prediction, training, evaluation, and the offline demo
that chains them."""
