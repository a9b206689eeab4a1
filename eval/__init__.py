"""eval stage."""
from .metrics import aggregate_metrics, evaluate, sample_metrics

__all__ = ["aggregate_metrics", "evaluate", "sample_metrics"]
