"""Dtypes under mixed precision: every attention, posenc and backbone keeps its dtypes
consistent (#11, item 8).

CPU autocast does not reproduce what CUDA autocast hands the kernels: on CUDA, softmax, exp,
sum, cumsum and layer_norm run in float32 and their outputs meet bfloat16 tensors from the
matmuls (`attention=graph trainer=gpu` crashed in index_add with a float32 source and a
bfloat16 destination). So the contract is tested on the CPU with modules and inputs in
bfloat16, under CPU autocast, under an emulation of CUDA autocast's casting rules
(:class:`CudaAutocast`), and kernel by kernel with float32 scores or biases meeting
bfloat16 values.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

from attnbench import registry
from attnbench.nn import sparse
from attnbench.nn.additive import AdditiveScore
from attnbench.nn.attention import ScoreAttention, masked_softmax, sdpa
from attnbench.nn.ctx import Ctx
from attnbench.nn.sparse import band_attention, edge_attention, grid_attention, segment_softmax
from attnbench.registry import ConfigError

D, H, HD = 16, 2, 8
BF16 = torch.bfloat16
TOL = {"atol": 5e-2, "rtol": 5e-2}  # bfloat16 keeps 8 bits: ~0.4% per rounding

# ----------------------------------------------------------------------------- CUDA autocast

# CUDA autocast's op lists, from ATen/autocast_mode.h (torch 2.x), by the names the Python
# API calls them (x @ y is matmul, x ** y pow): which ops run in bfloat16, in float32 (those
# in FLOAT32_UNLESS_DTYPE only when no dtype is given), or in the widest input type. lstm and
# gru: cuDNN's RNN is cast to bfloat16 too (ATen/cudnn/AutocastRNN.cpp).
LOWER_PRECISION = {
    *"_convolution conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d".split(),
    *"conv_transpose3d convolution prelu addmm addmv addr matmul einsum mm mv".split(),
    *"linalg_vecdot linear addbmm baddbmm bmm chain_matmul linalg_multi_dot".split(),
    *"_thnn_fused_lstm_cell _thnn_fused_gru_cell lstm_cell gru_cell rnn_tanh_cell".split(),
    *"rnn_relu_cell scaled_dot_product_attention lstm gru".split(),
}
FLOAT32 = {
    *"acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan".split(),
    *"pow softplus layer_norm rms_norm group_norm cosine_similarity dist pdist cdist".split(),
    *"renorm logsumexp norm".split(),
}
FLOAT32_UNLESS_DTYPE = {
    *"prod softmax log_softmax cumprod cumsum linalg_vector_norm linalg_matrix_norm".split(),
    "sum",
}
PROMOTE = {
    *"addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot".split(),
    "scatter_add",
}
OPERATORS = {"__matmul__": "matmul", "__rmatmul__": "matmul", "__pow__": "pow", "__rpow__": "pow"}


def _castable(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class CudaAutocast(TorchFunctionMode):
    """CUDA autocast's casts (bfloat16) applied on the CPU: matmuls, linear layers,
    convolutions, SDPA and RNNs get bfloat16 inputs; softmax, exp, sum, cumsum, layer_norm
    float32 ones; the promote list the widest; every other op sees its inputs as they come,
    mixed dtypes included. As in autocast, an op's own inner ops are not cast again, nor
    in-place or out= variants."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        name = OPERATORS.get(name, name)
        to = None
        if "out" in kwargs:  # autocast leaves out= variants alone
            name = None
        if name in LOWER_PRECISION:
            to = BF16
        elif name in FLOAT32 or (name in FLOAT32_UNLESS_DTYPE and kwargs.get("dtype") is None):
            to = torch.float32
        elif name in PROMOTE:
            for t in tree_leaves((args, kwargs)):
                if _castable(t):
                    to = t.dtype if to is None else torch.promote_types(to, t.dtype)
        if to is not None:
            args, kwargs = tree_map(lambda t: t.to(to) if _castable(t) else t, (args, kwargs))
        return func(*args, **kwargs)


def test_the_emulation_casts_as_cuda_autocast_does():
    a, b = torch.randn(3, 4), torch.randn(4, 2)
    with CudaAutocast():
        product = a @ b  # a matmul: bfloat16
        weights = product.softmax(-1)  # softmax of bfloat16: float32
        total = product.sum()  # sum: float32
        squashed = product.tanh()  # not listed: as it comes
        mixed = weights * product  # an elementwise op: ordinary type promotion
    dtypes = [t.dtype for t in (product, weights, total, squashed, mixed)]
    assert dtypes == [BF16, torch.float32, torch.float32, BF16, torch.float32]


def test_the_emulation_reproduces_the_reported_crash():
    """exp() of bfloat16 scores is float32 on CUDA; scattered into bfloat16 it fails."""
    scores, values = torch.randn(5, 4), torch.randn(5, 4)
    seg = torch.tensor([0, 0, 1, 1, 1])
    with (
        CudaAutocast(),
        pytest.raises(RuntimeError, match=r"self \(BFloat16\) and source \(Float\)"),
    ):
        q = torch.nn.functional.linear(scores, torch.eye(4))  # bfloat16, as the projections
        v = torch.nn.functional.linear(values, torch.eye(4))
        q.new_zeros(2, 4).index_add(0, seg, q.exp() * v)


# ----------------------------------------------------------------------------- cases

N = 12  # tokens; the grid case has a CLS token at (-1, -1) and a 3 x 4 grid


def _edges(b: int, n: int) -> torch.Tensor:
    """Random sparse edges (2, E) [query node, key node], flat b·N + i, varied degrees."""
    g = torch.Generator().manual_seed(3)
    adj = torch.rand(b, n, n, generator=g) < 0.4
    bi, dst, src = adj.nonzero(as_tuple=True)
    return torch.stack([bi * n + dst, bi * n + src])


def _grid(b: int) -> torch.Tensor:
    """(B, 1 + 3·4, 2): a CLS token off the grid, then the cells row by row."""
    cells = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"), -1)
    pos = torch.cat([torch.tensor([[-1, -1]]), cells.reshape(-1, 2)])
    return pos[None].expand(b, -1, -1)


def _posenc(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    params = {"d_model": D} if name == "rope" else {"d_model": D, "heads": H}
    return registry.build("posenc", name, **params)


def _padding(n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor([n, n - 5])[:, None]  # (2, N)


# what a context asks of the attention (check_use's words) and how to build it
CONTEXTS = {
    "plain": ({}, lambda: {}),
    "padding": ({"padding": True}, lambda: {"key_padding_mask": _padding(N)}),
    "causal": ({"causal": True}, lambda: {"causal": True}),
    "rope": ({"relative_posenc": True}, lambda: {"posenc": _posenc("rope")}),
    "alibi": ({"relative_posenc": True}, lambda: {"posenc": _posenc("alibi")}),
    "relative": ({"relative_posenc": True}, lambda: {"posenc": _posenc("relative")}),
    "alibi+padding+causal": (
        {"relative_posenc": True, "padding": True, "causal": True},
        lambda: {"posenc": _posenc("alibi"), "key_padding_mask": _padding(N), "causal": True},
    ),
    "grid+rope": (
        {"relative_posenc": True},
        lambda: {"positions": _grid(2), "posenc": _posenc("rope")},
    ),
    "grid+alibi+padding": (
        {"relative_posenc": True, "padding": True},
        lambda: {
            "positions": _grid(2),
            "posenc": _posenc("alibi"),
            "key_padding_mask": _padding(N + 1),
        },
    ),
}


def _served(name: str, uses: dict) -> bool:
    cls = registry.get("attention", name).cls
    try:
        cls.check_use(graph=cls.needs_graph, **uses)
    except ConfigError:
        return False
    return True


CASES = [
    pytest.param(name, ctx, id=f"{name}-{ctx}")
    for name in registry.available("attention")
    for ctx, (uses, _) in CONTEXTS.items()
    if _served(name, uses)
]


def _setup(name: str, ctx_name: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """An fp32 attention (d_model=16, 2 heads), inputs (2, N, 16) and the ctx's fields."""
    torch.manual_seed(0)
    params = {"window": 2} if name == "truncated" else {}
    attn = registry.build("attention", name, d_model=D, heads=H, **params).eval()
    fields = CONTEXTS[ctx_name][1]()
    n = fields["positions"].size(1) if "positions" in fields else N
    if attn.needs_graph:
        fields["edges"] = _edges(2, n)
    x = torch.randn(2, n, D, generator=torch.Generator().manual_seed(2))
    return attn, x, fields


def _run(attn, x: torch.Tensor, fields: dict, need_weights: bool):
    with torch.no_grad():
        return attn(x, x, x, ctx=Ctx(**fields), need_weights=need_weights)


def test_every_attention_is_covered():
    assert {p.values[0] for p in CASES} == set(registry.available("attention"))


@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "weights"])
@pytest.mark.parametrize(("name", "ctx_name"), CASES)
def test_bfloat16_module_gives_bfloat16_close_to_float32(name, ctx_name, need_weights):
    attn, x, fields = _setup(name, ctx_name)
    y32, w32 = _run(attn, x, fields, need_weights)
    if fields.get("posenc") is not None:  # a model's .to() converts its posenc too
        fields["posenc"] = fields["posenc"].to(BF16)
    y, w = _run(attn.to(BF16), x.to(BF16), fields, need_weights)
    assert y.dtype == BF16 and y.isfinite().all()
    torch.testing.assert_close(y.float(), y32, **TOL)
    if need_weights:
        assert w.dtype == BF16
        torch.testing.assert_close(w.float(), w32, **TOL)


@pytest.mark.parametrize("autocast", ["cpu", "cuda-emulated"])
@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "weights"])
@pytest.mark.parametrize(("name", "ctx_name"), CASES)
def test_float32_module_under_autocast(name, ctx_name, need_weights, autocast):
    attn, x, fields = _setup(name, ctx_name)
    y32, w32 = _run(attn, x, fields, need_weights)
    mode = torch.autocast("cpu", dtype=BF16) if autocast == "cpu" else CudaAutocast()
    with mode:
        y, w = _run(attn, x, fields, need_weights)
    assert y.dtype == BF16  # from the output projection: autocast was on
    assert y.shape == y32.shape and y.isfinite().all()
    torch.testing.assert_close(y.float(), y32, **TOL)
    if need_weights:
        assert w.isfinite().all()
        torch.testing.assert_close(w.float(), w32, **TOL)


# ----------------------------------------------------------------------------- kernels


def _qkv(b: int, n: int, dtype=BF16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return tuple(torch.randn(b, H, n, HD, generator=g).to(dtype) for _ in range(3))


def _bias(b: int, n: int) -> torch.Tensor:
    """A float32 score bias (B, h, N, N), as a relative posenc gives."""
    return torch.randn(b, H, n, n, generator=torch.Generator().manual_seed(5))


def _check(out: tuple, ref: tuple, need_weights: bool) -> None:
    """bfloat16 output (and weights) close to the float32 run's."""
    (y, w), (y32, w32) = out, ref
    assert y.dtype == BF16 and y.isfinite().all()
    torch.testing.assert_close(y.float(), y32, **TOL)
    if need_weights:
        assert w.dtype == BF16
        torch.testing.assert_close(w.float(), w32, **TOL)


def test_segment_softmax_normalises_in_float32_and_keeps_the_scores_dtype():
    g = torch.Generator().manual_seed(6)
    seg = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    scores = torch.randn(seg.numel(), H, generator=g) * 4
    p = segment_softmax(scores.to(BF16), seg, 3)
    assert p.dtype == BF16
    for s in range(3):  # each segment's own softmax
        torch.testing.assert_close(p[seg == s].float(), scores[seg == s].softmax(0), **TOL)
    assert segment_softmax(scores, seg, 3).dtype == torch.float32


@pytest.mark.parametrize("need_weights", [False, True])
def test_edge_attention_with_a_float32_bias_and_bfloat16_values(need_weights):
    q, k, v = _qkv(2, N)
    edges, bias, padding = _edges(2, N), _bias(2, N), _padding(N)
    kw = {"key_valid": padding, "need_weights": need_weights}
    ref = edge_attention(q.float(), k.float(), v.float(), edges, bias=bias, **kw)
    _check(edge_attention(q, k, v, edges, bias=bias, **kw), ref, need_weights)


@pytest.mark.parametrize("need_weights", [False, True])
def test_edge_attention_with_float32_probabilities_as_cuda_gives(monkeypatch, need_weights):
    """On CUDA exp() runs in float32: the segment softmax hands float32 probabilities to the
    bfloat16 values (the reported index_add crash)."""
    q, k, v = _qkv(2, N)
    edges = _edges(2, N)
    ref = edge_attention(q.float(), k.float(), v.float(), edges, need_weights=need_weights)
    softmax = sparse.segment_softmax
    monkeypatch.setattr(sparse, "segment_softmax", lambda *a: softmax(*a).float())
    _check(edge_attention(q, k, v, edges, need_weights=need_weights), ref, need_weights)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_band_attention_with_a_float32_bias_and_bfloat16_values(need_weights, causal):
    q, k, v = _qkv(2, N)
    kw = {"key_valid": _padding(N), "bias": _bias(2, N), "causal": causal}
    ref = band_attention(q.float(), k.float(), v.float(), 2, need_weights=need_weights, **kw)
    _check(band_attention(q, k, v, 2, need_weights=need_weights, **kw), ref, need_weights)


@pytest.mark.parametrize("need_weights", [False, True])
def test_grid_attention_with_a_float32_bias_and_bfloat16_values(need_weights):
    n = N + 1
    q, k, v = _qkv(2, n)
    kw = {"key_valid": _padding(n), "bias": _bias(2, n), "need_weights": need_weights}
    ref = grid_attention(q.float(), k.float(), v.float(), _grid(2), 1, **kw)
    _check(grid_attention(q, k, v, _grid(2), 1, **kw), ref, need_weights)


def test_attend_with_float32_probabilities_as_cuda_gives(monkeypatch):
    """On CUDA softmax runs in float32: its probabilities meet bfloat16 values."""
    q, k, v = _qkv(2, N)
    ref = band_attention(q.float(), k.float(), v.float(), 2, need_weights=True)
    softmax = torch.Tensor.softmax
    monkeypatch.setattr(torch.Tensor, "softmax", lambda t, *a, **kw: softmax(t.float(), *a, **kw))
    _check(band_attention(q, k, v, 2, need_weights=True), ref, True)


def test_masked_softmax_keeps_the_scores_dtype_whatever_the_bias():
    scores, bias = torch.randn(2, H, 4, 5), torch.randn(2, H, 4, 5)
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    mask[0, :, 1] = False  # a row with no allowed key: all-zero weights
    mask[1, :, :, 3] = False
    ref = (scores + bias).masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
    w = masked_softmax(scores.to(BF16), mask, bias)  # float32 bias, bfloat16 scores
    assert w.dtype == BF16
    torch.testing.assert_close(w.float(), ref, **TOL)
    assert (w[0, :, 1] == 0).all() and (w[1, :, :, 3] == 0).all()
    assert masked_softmax(scores, mask, bias.to(BF16)).dtype == torch.float32


@pytest.mark.parametrize("need_weights", [False, True])
def test_sdpa_with_a_float32_posenc_bias_and_bfloat16_values(need_weights):
    q, k, v = _qkv(2, N)
    ctx = Ctx(posenc=_posenc("alibi"), key_padding_mask=_padding(N))
    ref = sdpa(q.float(), k.float(), v.float(), ctx, need_weights=need_weights)
    _check(sdpa(q, k, v, ctx, need_weights=need_weights), ref, need_weights)


@pytest.mark.parametrize("need_weights", [False, True])
def test_additive_score_float32_parameters_with_bfloat16_features(need_weights):
    torch.manual_seed(0)
    score = AdditiveScore(H, HD, chunk_size=5)  # float32 v; three chunks of queries
    qh, kh, v = _qkv(2, N)
    ctx = Ctx(posenc=_posenc("alibi"), causal=True)  # a float32 score bias
    with torch.no_grad():
        ref = score(qh.float(), kh.float(), v.float(), ctx, need_weights=need_weights)
        _check(score(qh, kh, v, ctx, need_weights=need_weights), ref, need_weights)


class Float32Score(ScoreAttention):
    """A score that comes out in float32 (as a sum does under CUDA autocast)."""

    def score(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))


@pytest.mark.parametrize("need_weights", [False, True])
def test_score_attention_with_float32_scores_and_bfloat16_values(need_weights):
    torch.manual_seed(0)
    attn = Float32Score(D, H).eval()
    x = torch.randn(2, N, D)
    ctx = Ctx(posenc=_posenc("alibi"), key_padding_mask=_padding(N))
    with torch.no_grad():
        ref = attn(x, x, x, ctx=ctx, need_weights=need_weights)
        out = attn.to(BF16)(x.to(BF16), x.to(BF16), x.to(BF16), ctx=ctx, need_weights=need_weights)
    _check(out, ref, need_weights)


# ----------------------------------------------------------------------------- posenc


@pytest.mark.parametrize("name", ["alibi", "relative"])
@pytest.mark.parametrize("two_d", [False, True])
def test_score_biases_hold_under_bfloat16(name, two_d):
    ctx = Ctx(positions=_grid(1) if two_d else torch.arange(300)[None])
    n = ctx.positions.size(1)
    ref = _posenc(name).score_bias(n, n, ctx)
    bias = _posenc(name).to(BF16).score_bias(n, n, ctx)
    assert bias.isfinite().all()
    # positions beyond 256 are not exact in bfloat16: distances must not be taken in it
    torch.testing.assert_close(bias.float(), ref.float(), **TOL)


def test_rope_keeps_the_features_dtype():
    q, k, _ = _qkv(2, N)
    rq, rk = _posenc("rope").rotate(q, k, Ctx())
    rq32, rk32 = _posenc("rope").rotate(q.float(), k.float(), Ctx())
    assert rq.dtype == rk.dtype == BF16
    torch.testing.assert_close(rq.float(), rq32, **TOL)


# ----------------------------------------------------------------------------- backbones


def _backbone(name: str, grid: bool = False, **params) -> torch.nn.Module:
    """The backbone as the harness builds it for a plain task (no edges, grid, pads or
    seq2seq), with the default attention and posenc factories where it takes them."""
    torch.manual_seed(0)
    task = types.SimpleNamespace(gives_edges=False, grid=grid, pads=False, seq2seq=False)
    takes = {p.name for p in registry.get("model", name).params}
    supplied = {
        "task": task,
        "attention": registry.factory("attention", "dot"),
        "posenc": registry.factory("posenc", "sinusoidal"),
    }
    params = {**{k: v for k, v in supplied.items() if k in takes}, **params}
    return registry.build("model", name, d_model=D, **params).eval()


def _under(autocast: str):
    return torch.autocast("cpu", dtype=BF16) if autocast == "cpu" else CudaAutocast()


@pytest.mark.parametrize("autocast", ["cpu", "cuda-emulated"])
@pytest.mark.parametrize("name", registry.available("model"))
def test_every_backbone_under_autocast(name, autocast):
    model = _backbone(name)
    x = torch.randn(2, N, D)
    with torch.no_grad():
        ref = model(x, Ctx())
        with _under(autocast):
            y = model(x, Ctx())
    assert y.shape == x.shape and y.isfinite().all()
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.1)  # after LayerNorm: O(1)


@pytest.mark.parametrize("autocast", ["cpu", "cuda-emulated"])
@pytest.mark.parametrize("residual", [True, False])
def test_cnn_on_a_grid_under_autocast(residual, autocast):
    """The 2-D path scatters convolved cells back into the token tensor."""
    model = _backbone("cnn", grid=True, residual=residual)
    x = torch.randn(2, N + 1, D)
    ctx = Ctx(positions=_grid(2), key_padding_mask=_padding(N + 1))
    with torch.no_grad(), _under(autocast):
        y = model(x, ctx)
    assert y.shape == x.shape and y.isfinite().all()


@pytest.mark.parametrize("autocast", ["cpu", "cuda-emulated"])
@pytest.mark.parametrize(
    "name", [p.name for p in registry.plugins("model") if p.cls.supports_seq2seq]
)
def test_encoder_decoders_under_autocast(name, autocast):
    """Teacher forcing and one incremental step, with a padded source."""
    torch.manual_seed(0)
    task = types.SimpleNamespace(gives_edges=False, grid=False, pads=True, seq2seq=True)
    takes = {p.name for p in registry.get("model", name).params}
    supplied = {
        "task": task,
        "attention": registry.factory("attention", "dot"),
        "posenc": registry.factory("posenc", "sinusoidal"),
    }
    model = registry.build(
        "model", name, d_model=D, **{k: v for k, v in supplied.items() if k in takes}
    ).eval()
    src, tgt = torch.randn(2, N, D), torch.randn(2, 5, D)
    src_ctx = Ctx(key_padding_mask=_padding(N))
    with torch.no_grad(), _under(autocast):
        memory = model.encode(src, src_ctx)
        h, _ = model.decode(tgt, memory, src_ctx)
        _, cache = model.decode(tgt[:, :4], memory, src_ctx)
        step, _ = model.decode(tgt[:, 4:], memory, src_ctx, cache)
    assert h.shape == tgt.shape and h.isfinite().all() and step.isfinite().all()
    torch.testing.assert_close(step.float(), h[:, 4:].float(), atol=0.1, rtol=0.1)
