"""One partition of the problem space, by meaning: which problems are eval, dev and train.

Contract: a Countdown problem's canonical key (`Problem.key`) is its sorted numbers and its target
(`"3 7 9 13 -> 24"`): two problems with the same numbers in another order are the same problem. Its bucket is
`int(sha256(key).hexdigest(), 16) % 100`; buckets 0-4 are the eval split (final reporting only), 5-9 the
dev split (every tuning decision), 10-99 train. The split is decided by the key alone, before any data
is generated, so no generator can draw an eval problem into training. A user's task file is split the
same way by a hash of its normalised problem text (`text_key`).
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["eval", "dev", "train"]
SPLITS: tuple[Split, ...] = ("eval", "dev", "train")
EVAL_BUCKETS = range(0, 5)
DEV_BUCKETS = range(5, 10)


def text_key(text: str) -> str:
    """A task's text as its split reads it: case and runs of whitespace do not change the problem."""
    return " ".join(text.lower().split())


def bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100


def split_of_key(key: str) -> Split:
    where = bucket(key)
    if where in EVAL_BUCKETS:
        return "eval"
    return "dev" if where in DEV_BUCKETS else "train"


def split_of_text(text: str) -> Split:
    return split_of_key(text_key(text))
