"""recalign: instruction data and alignment harness for LLM recommenders."""
__version__ = "0.1.0"
