"""Protocols: which rules score an answer, named so that two numbers are only compared
when they were made under the same rules.

``recalign`` (ours) and ``reclm-gen`` (the official RecLM-gen code, REFERENCE.md §1.7)
differ in named options, each with two values, so a user can switch one at a time:

* ``parser``: ``lenient`` reads numbered, bulleted or plain lists, skips prose lines, and
  matches titles case-insensitively with quotes and a trailing ``(year)`` optional;
  ``strict`` is the official parser (every line an item, one ``N. `` removed, exact
  case-sensitive titles). Ours is lenient because a reward should judge the recommendation,
  not punish a 135M model's preamble; strict leaves RL more format error to fix, and is
  the only way to compare a number with the paper's.
* ``reward_ranks``: ``masked`` ranks an item among the items outside the prompt's history
  (the teacher's labels are made that way, and history items are illegal anyway);
  ``unmasked`` is the official ranking endpoint, whose ranks count history items too.
* ``tcp_minus``: ``outside`` reports I1- TCP as the share of slots outside the excluded
  category (higher is better, like I1+'s); ``inside`` is the official report, the in-category
  share (lower is better). Ours keeps "higher is better" for every TCP in a table.

PPO also takes its optimisation details from the protocol where its own fields are unset
(:data:`RL_DEFAULTS`: reward scaling by a running std, warm-up + power-2 decay, AdamW eps and
weight decay, gradient clip, the token an item's reward lands on, when the KL stop is checked). Its RL prompt sampling (item_count U{6..10}, the I1/I2 draws) is
data, not scoring: ``data build --rl-split`` (tasks' ``rl_*`` keys). Options the official code
has that are not wired here yet (full lm_head tuning) are listed in
the README's protocol section, not accepted silently as options that do nothing.

>>> get_protocol("reclm-gen").parser, get_protocol("reclm-gen", parser="lenient").as_dict()
('strict', {'name': 'reclm-gen', 'parser': 'lenient', 'reward_ranks': 'unmasked', 'tcp_minus': 'inside'})
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from recalign.data.util import DataError, suggest

PARSERS = ("lenient", "strict")
RANKS = ("masked", "unmasked")


@dataclass(frozen=True)
class Protocol:
    name: str
    parser: str = "lenient"
    reward_ranks: str = "masked"
    tcp_minus: str = "outside"

    def as_dict(self) -> dict:
        return asdict(self)


PROTOCOLS = {
    "recalign": Protocol("recalign", parser="lenient", reward_ranks="masked", tcp_minus="outside"),
    "reclm-gen": Protocol("reclm-gen", parser="strict", reward_ranks="unmasked", tcp_minus="inside"),
}
CHOICES = {"parser": PARSERS, "reward_ranks": RANKS, "tcp_minus": ("outside", "inside")}


def get_protocol(name: str | None = "recalign", **overrides) -> Protocol:
    """The named protocol with single options overridden (None values are ignored).
    Unknown names and values are a :class:`DataError` listing the choices."""
    name = name or "recalign"
    if name not in PROTOCOLS:
        raise DataError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOLS)}{suggest(name, PROTOCOLS)}")
    set_ = {k: v for k, v in overrides.items() if v is not None}
    for k, v in set_.items():
        if k not in CHOICES:
            raise DataError(f"protocol option {k!r}: unknown (options: {', '.join(CHOICES)})")
        if v not in CHOICES[k]:
            raise DataError(f"--{k.replace('_', '-')} {v!r}: choose one of {', '.join(CHOICES[k])}")
    return replace(PROTOCOLS[name], **set_)


# RL settings each protocol implies where a trainer's own field is left unset (None):
# the official code's rl_train.sh / base/trainer.py against torch's and TRL's usual defaults
RL_DEFAULTS = {
    "recalign": {"reward_scaling": "none", "lr_schedule": "constant", "adam_eps": 1e-8, "weight_decay": 0.01,
                 "max_grad_norm": 1.0, "item_reward_token": "line_end", "kl_stop": "minibatch",
                 "loss_average": "token"},
    "reclm-gen": {"reward_scaling": "running_std", "lr_schedule": "warmup_power2", "adam_eps": 1e-5,
                  "weight_decay": 0.0, "max_grad_norm": 0.5, "item_reward_token": "newline",
                  "kl_stop": "epoch_end", "loss_average": "sequence"},
}


def protocol_of(run: dict) -> dict:
    """A metrics.json's protocol; runs written before protocols existed used ``recalign``, and
    before ``tcp_minus`` existed every run reported I1- TCP as the share outside the category."""
    found = run.get("protocol")
    return {"tcp_minus": "outside", **found} if found else PROTOCOLS["recalign"].as_dict()
