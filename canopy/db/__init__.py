"""Tables, engines with primary/replica routing, and migrations of the global and cell databases."""
