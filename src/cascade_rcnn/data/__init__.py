"""Data before the network: reading images, COCO data sets and their checks, the ``--coco-root``
layout, the synthetic shapes set, the transforms to the network's input, and training batches."""
