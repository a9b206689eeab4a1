"""SASRec teacher: training, full-ranking evaluation, batched top-k / rank queries.

Exports resolve lazily so that importing ``recalign.teacher.config`` stays torch-free.
"""
__all__ = ["Teacher", "TeacherTrainConfig", "rank_metrics"]


def __getattr__(name):
    if name == "Teacher":
        from .teacher import Teacher

        return Teacher
    if name == "TeacherTrainConfig":
        from .config import TeacherTrainConfig

        return TeacherTrainConfig
    if name == "rank_metrics":
        from .metrics import rank_metrics

        return rank_metrics
    raise AttributeError(name)
