"""Rewards: the shared answer parser, RecLM-gen rule-based rewards, TRL adapters, A-SFT weights.

Imports only ``recalign.data`` (the catalog); ``recalign.eval.metrics`` uses the same parser.
"""
from .adapters import completion_text, make_format_reward, make_list_reward
from .asft import advantages, asft_weights, judge_ratings
from .parser import ParsedItem, catalog_index, parse_items, parse_list
from .reclm import (ALPHA, LIST_SCALE, TASKS, RewardResult, canonical_task, item_and_list_rewards,
                    list_normalizer, row_rule, row_spec)

__all__ = ["ALPHA", "LIST_SCALE", "TASKS", "ParsedItem", "RewardResult", "advantages", "asft_weights",
           "canonical_task", "catalog_index", "completion_text", "item_and_list_rewards", "judge_ratings", "list_normalizer",
           "make_format_reward", "make_list_reward", "parse_items", "parse_list", "row_rule", "row_spec"]
