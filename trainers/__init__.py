"""trainers stage: one module per method (sft, ppo, grpo/rloo, asft, rlrf4rec), each a config
dataclass on TRL's and a ``train(cfg)``; ``cli_main`` is their shared command line."""
from __future__ import annotations


def cli_main(config_cls, train, argv: list[str] | None = None, what: str = "adapter") -> int:
    """``python -m recalign.trainers.<m>`` (and ``recalign train <m>``): TRL-style flags and
    ``--config file.yaml`` into ``config_cls``, then ``train(cfg)``, which returns the output dir."""
    from trl import TrlParser

    (cfg,) = TrlParser((config_cls,)).parse_args_and_config(args=argv)
    print(f"wrote {what} to {train(cfg)}")
    return 0
