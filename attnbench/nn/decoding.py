"""Autoregressive generation over a step function with incremental state.

``step(tokens (N,), state) -> (log_probs (N, V), state)`` consumes the last token of every
row and returns the next-token log-probabilities plus its updated state (a transformer's cached
keys/values, an RNN's hidden state). A state is ``None`` or any nest of dicts/lists/tuples
whose tensors are batch-first; other leaves (ints) are kept as they are. Beams are reordered
by indexing every tensor of the state along dim 0, except in dicts marked ``static``: those
hold what is the same for every beam of a sentence (cross-attention keys/values of the
source), and beams only ever move within their own sentence.

Outputs are (B, L) token ids after <s>: the hypothesis, its </s>, then ``pad``. Neither
``pad`` nor <s> is ever generated inside a hypothesis.
The loop runs over output steps (inherent to autoregressive decoding), never over rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Step = Callable[[Tensor, Any], tuple[Tensor, Any]]


def _forbid(logp: Tensor, *tokens: int) -> Tensor:
    """log-probs (N, V) with ``tokens`` made impossible (specials that are not words)."""
    logp = logp.float().clone()
    logp[:, list(tokens)] = float("-inf")
    return logp


def select_state(state: Any, index: Tensor) -> Any:
    """Rows ``index`` of every batch-first tensor in a (nested) state."""
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, dict):
        if state.get("static"):  # identical rows for all beams of a sentence
            return state
        return {k: select_state(v, index) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(select_state(v, index) for v in state)
    return state


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT's ((5 + len) / 6) ** alpha (Wu et al. 2016); alpha = 0 ranks by raw log-prob."""
    return ((5.0 + lengths.to(torch.float32)) / 6.0) ** alpha


@torch.no_grad()
def greedy_search(
    step: Step,
    batch_size: int,
    bos: int,
    eos: int,
    pad: int,
    max_len: int,
    device: torch.device | str = "cpu",
    state: Any = None,
) -> Tensor:
    """The most probable next token at every step, until </s> or ``max_len`` tokens."""
    tokens = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_len):
        logp, state = step(tokens[:, -1], state)  # (B, V)
        nxt = _forbid(logp, pad, bos).argmax(-1).masked_fill(done, pad)  # finished rows only pad
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == eos
        if bool(done.all()):
            break
    return tokens[:, 1:]


@torch.no_grad()
def beam_search(
    step: Step,
    batch_size: int,
    bos: int,
    eos: int,
    pad: int,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.0,
    device: torch.device | str = "cpu",
    state: Any = None,
) -> Tensor:
    """Beam search with a length penalty; ``step`` sees B * beam_size rows (row b*K + k is
    beam k of example b), so tensors it closes over (encoder memory) must be expanded with
    ``repeat_interleave(beam_size, 0)``; ``state``, if given, holds B rows and is expanded here.

    Hypotheses are ranked by log P / length_penalty(len, alpha). A finished beam stays in
    the beam, extended by ``pad`` at no cost, so beam_size=1 is exactly greedy search.
    """
    B, K = batch_size, beam_size
    rows = torch.arange(B, device=device)
    if state is not None:
        state = select_state(state, rows.repeat_interleave(K))
    tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)  # raw log-probabilities
    scores[:, 1:] = float("-inf")  # all beams start equal: keep only the first alive
    lengths = torch.zeros(B * K, dtype=torch.long, device=device)
    done = torch.zeros(B * K, dtype=torch.bool, device=device)
    for _ in range(max_len):
        logp, state = step(tokens[:, -1], state)  # (B*K, V)
        V = logp.size(-1)
        logp = _forbid(logp, pad, bos)
        frozen = torch.full_like(logp, float("-inf"))
        frozen[:, pad] = 0.0
        logp = torch.where(done[:, None], frozen, logp)  # finished: only pad, free
        new_len = lengths + (~done).long()  # (B*K,)
        cand = scores.view(B * K, 1) + logp  # (B*K, V)
        ranked = cand / length_penalty(new_len, alpha)[:, None]
        _, top = ranked.view(B, K * V).topk(K, dim=1)  # (B, K)
        src = (rows[:, None] * K + top // V).view(-1)  # the beam each winner extends
        tok = (top % V).view(-1)
        scores = cand.view(B, K * V).gather(1, top)
        tokens = torch.cat([tokens[src], tok[:, None]], dim=1)
        lengths, done = new_len[src], done[src] | (tok == eos)
        state = select_state(state, src)
        if bool(done.all()):
            break
    final = scores / length_penalty(lengths, alpha).view(B, K)
    best = final.argmax(dim=1)  # (B,)
    return tokens.view(B, K, -1)[rows, best, 1:]
