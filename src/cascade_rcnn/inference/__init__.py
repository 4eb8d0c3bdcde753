"""From user images to detections: decoding, resizing and same-size batching of inputs around
the network (the role of torchvision's transform or Detectron2's ``DefaultPredictor``)."""
