"""What a prediction gives users: ``Detections`` (COCO records), the step from the network's raw
output to original-image pixels, and drawn pictures; and the checks that keep every command's
outputs off its inputs and off a previous run's results."""
