"""Greedy and beam search over a step function (attnbench.nn.decoding)."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.nn.decoding import beam_search, greedy_search, length_penalty, select_state

PAD, BOS, EOS = 0, 1, 2
V = 7


def random_lm(seed: int, batch: int):
    """A toy language model whose next-token distribution depends on the example, the last
    token and a running state (so beam reordering of the state matters)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(batch, V, V, generator=g) * 2  # (B, last, next)
    mix = torch.randn(V, V, generator=g)

    def step(tokens: torch.Tensor, state):
        n = tokens.size(0)
        k = n // batch  # rows per example (beam size)
        example = torch.arange(n) // k
        acc = torch.zeros(n, V) if state is None else state["acc"]
        acc = 0.5 * acc + torch.nn.functional.one_hot(tokens, V).float()
        logits = table[example, tokens] + acc @ mix
        return logits.log_softmax(-1), {"acc": acc, "steps": 0}

    return step


def sequence_logprob(step, tokens: torch.Tensor) -> float:
    """log P of one row's tokens (up to and including </s>) under a batch-1 step function."""
    state, last, total = None, torch.tensor([BOS]), 0.0
    for t in tokens.tolist():
        if t == PAD:
            break
        logp, state = step(last, state)
        total += float(logp[0, t])
        last = torch.tensor([t])
        if t == EOS:
            break
    return total


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_is_greedy(seed):
    step = random_lm(seed, batch=3)
    greedy = greedy_search(step, 3, BOS, EOS, PAD, max_len=12)
    for alpha in (0.0, 0.6, 2.0):
        beam = beam_search(step, 3, BOS, EOS, PAD, max_len=12, beam_size=1, alpha=alpha)
        assert torch.equal(beam, greedy)


def test_greedy_stops_at_eos_and_pads_after():
    def step(tokens, state):  # EOS after exactly 2 tokens for row 0, never for row 1
        t = 0 if state is None else state
        logits = torch.full((2, V), -5.0)
        logits[0, EOS if t == 2 else 4] = 5.0
        logits[1, 5] = 5.0
        return logits.log_softmax(-1), t + 1

    out = greedy_search(step, 2, BOS, EOS, PAD, max_len=6)
    assert out[0].tolist() == [4, 4, EOS, PAD, PAD, PAD]
    assert out[1].tolist() == [5] * 6


def trap():
    """Greedy takes token 3 (p=0.6) but then only poor continuations; token 4 (p=0.4) leads
    to a sure </s>: the best sequence is [4, </s>] with P = 0.4 > 0.6 * 0.5."""

    def step(tokens, state):
        n = tokens.size(0)
        probs = torch.full((n, V), 1e-6)
        first = tokens == BOS
        probs[first, 3], probs[first, 4] = 0.6, 0.4
        after3, after4 = tokens == 3, tokens == 4
        probs[after3, 5], probs[after3, 6] = 0.5, 0.5
        probs[after4, EOS] = 1.0
        rest = ~(first | after3 | after4)
        probs[rest, EOS] = 1.0
        return (probs / probs.sum(-1, keepdim=True)).log(), state

    return step


def test_beam_search_escapes_the_greedy_trap():
    step = trap()
    greedy = greedy_search(step, 1, BOS, EOS, PAD, max_len=5)
    beam = beam_search(step, 1, BOS, EOS, PAD, max_len=5, beam_size=2)
    assert greedy[0, 0].item() == 3
    assert beam[0].tolist()[:2] == [4, EOS]
    assert sequence_logprob(step, beam[0]) > sequence_logprob(step, greedy[0])


def test_length_penalty_favours_longer_hypotheses():
    # </s> now (p=0.5) or one token more then </s> (p=0.45 total): raw log P picks the short
    # one, a strong length penalty the long one.
    def step(tokens, state):
        n = tokens.size(0)
        probs = torch.full((n, V), 1e-9)
        first = tokens == BOS
        probs[first, EOS], probs[first, 3] = 0.5, 0.45
        probs[~first, EOS] = 1.0
        return (probs / probs.sum(-1, keepdim=True)).log(), state

    short = beam_search(step, 1, BOS, EOS, PAD, max_len=5, beam_size=2, alpha=0.0)
    long = beam_search(step, 1, BOS, EOS, PAD, max_len=5, beam_size=2, alpha=2.0)
    assert short[0, 0].item() == EOS
    assert long[0, :2].tolist() == [3, EOS]
    assert length_penalty(torch.tensor([1]), 0.6).item() == pytest.approx((6 / 6) ** 0.6)
    assert length_penalty(torch.tensor([7]), 1.0).item() == pytest.approx(2.0)


def test_beam_results_do_not_depend_on_the_rest_of_the_batch():
    step = random_lm(3, batch=4)
    together = beam_search(step, 4, BOS, EOS, PAD, max_len=10, beam_size=3, alpha=0.6)
    g = torch.Generator().manual_seed(3)
    table = torch.randn(4, V, V, generator=g) * 2
    mix = torch.randn(V, V, generator=g)
    for b in range(4):

        def alone(tokens, state, b=b):
            acc = torch.zeros(tokens.size(0), V) if state is None else state
            acc = 0.5 * acc + torch.nn.functional.one_hot(tokens, V).float()
            return (table[b, tokens] + acc @ mix).log_softmax(-1), acc

        single = beam_search(alone, 1, BOS, EOS, PAD, max_len=10, beam_size=3, alpha=0.6)
        n = single.size(1)
        assert together[b, :n].tolist() == single[0].tolist()
        assert (together[b, n:] == PAD).all()


def test_beam_search_score_is_at_least_greedys_on_random_models():
    worse = 0
    for seed in range(10):
        step = random_lm(seed, batch=1)
        greedy = greedy_search(step, 1, BOS, EOS, PAD, max_len=8)
        beam = beam_search(step, 1, BOS, EOS, PAD, max_len=8, beam_size=5)
        worse += sequence_logprob(step, beam[0]) < sequence_logprob(step, greedy[0]) - 1e-5
    assert worse == 0


def test_select_state_reorders_nested_batch_first_tensors():
    state = {
        "pos": 3,
        "layers": [torch.arange(4)[:, None] * 10, None],
        "pair": (torch.arange(4), "keep"),
    }
    idx = torch.tensor([2, 2, 0])
    out = select_state(state, idx)
    assert out["pos"] == 3 and out["layers"][1] is None and out["pair"][1] == "keep"
    assert out["layers"][0].flatten().tolist() == [20, 20, 0]
    assert out["pair"][0].tolist() == [2, 2, 0]
    assert isinstance(out["pair"], tuple)
    assert math.isclose(length_penalty(torch.tensor([3]), 0.0).item(), 1.0)
