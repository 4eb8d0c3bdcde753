"""What a prediction gives users: ``Detections`` (COCO records), the step from the network's raw
output to original-image pixels, and drawn pictures."""
