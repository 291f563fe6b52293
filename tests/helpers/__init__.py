"""Test helpers: the float64 reference, tolerances, and a fake kernel plugin."""
