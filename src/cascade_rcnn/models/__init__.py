"""The detector's parts, one module each: backbone -> fpn -> rpn -> cascade (box + mask heads)."""
