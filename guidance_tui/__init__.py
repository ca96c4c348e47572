"""guidance-tui: a terminal inspector for grammar-constrained LLM generation."""

__version__ = "0.1.0"
