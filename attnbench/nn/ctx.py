"""What a batch knows about its own structure, handed to every layer as ``ctx``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass
class Ctx:
    """Structure of a batch. Masks are boolean with True = may attend (as in SDPA).

    key_padding_mask: (B, Nk) True for real keys, False for padding.
    causal:           queries may only see keys at positions <= their own.
    positions:        (B, N) 1-D positions or (B, N, 2) 2-D grid positions (image patches).
    edges:            (2, E) long; row 0 the query node, row 1 the key node it may attend,
                      indices into the flattened batch (b * N + i).
    posenc:           a relative positional encoding the attention calls (rotate q/k or
                      add a score bias); None for absolute or no encoding.
    kv_cache:         incremental decoding with a plugin that ``supports_kv_cache``: a dict
                      the plugin keeps its projected keys/values in ("k", "v"). With
                      {"static": True} (cross-attention) they are projected once and reused;
                      otherwise (causal self-attention) each call's are appended.
    """

    key_padding_mask: Tensor | None = None
    causal: bool = False
    positions: Tensor | None = None
    edges: Tensor | None = None
    posenc: Any = None
    kv_cache: dict | None = None

    def replace(self, **changes: Any) -> Ctx:
        return dataclasses.replace(self, **changes)
