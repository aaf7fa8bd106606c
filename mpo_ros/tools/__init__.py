"""User-facing tools that may import everything: the demo, the README reference generator, inspect."""
