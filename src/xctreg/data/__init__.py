"""Data: the embedded procedural phantom and the example chest CT."""
