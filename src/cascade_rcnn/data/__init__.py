"""Reading images and turning them into the network's input."""
