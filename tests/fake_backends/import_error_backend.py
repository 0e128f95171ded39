"""A backend whose framework is missing: the harness must mark it failed and carry on."""

raise ImportError("No module named 'imaginary_framework' (deliberately broken test backend)")
