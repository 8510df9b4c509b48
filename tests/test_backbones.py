"""Baseline backbones (cnn, rnn, mlp, window_mlp): end-to-end runs, padding invariance,
receptive fields, the 2-D convolution path and refusals."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import fast_dev_run

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

BACKBONES = ("cnn", "rnn", "mlp", "window_mlp")
D = 16


def build(name: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    # what the harness supplies: the task's structure, and an attention for the RNN decoder
    task = types.SimpleNamespace(grid=params.pop("grid", False), seq2seq=False)
    takes = {p.name for p in registry.get("model", name).params}
    supplied = {"task": task, "attention": registry.factory("attention", "dot")}
    params = {**{k: v for k, v in supplied.items() if k in takes}, **params}
    return registry.build("model", name, d_model=D, **params).eval()


def padded_batch(lengths: list[int], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (B, N, D) inputs, right-padded; `extra` more pad columns of garbage values."""
    g = torch.Generator().manual_seed(1)
    n = max(lengths) + extra
    x = torch.randn(len(lengths), n, D, generator=g)
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N) True = real
    return x, mask


# ----------------------------------------------------------------------------- end to end


# What each built-in backbone must refuse, stated here rather than read from its flags:
# order-based backbones cannot serve graph nodes; only encoder-decoders serve translation.
REFUSED = {
    **{(m, "graph"): "supports_graph" for m in ("cnn", "rnn", "window_mlp")},
    **{(m, "translation"): "supports_seq2seq" for m in ("cnn", "mlp", "window_mlp")},
    # Nadaraya-Watson regression pools with the model's own attention layer
    **{
        (m, "regression"): "supports_attention_pooling" for m in ("cnn", "rnn", "mlp", "window_mlp")
    },
}


@pytest.mark.parametrize("task", registry.available("task"))
@pytest.mark.parametrize("model", BACKBONES)
def test_fast_dev_run_every_task(model, task, tmp_path):
    overrides = [f"task={task}", f"model={model}", "model.d_model=16"]
    if (model, task) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[model, task]) as err:
            fast_dev_run(overrides, tmp_path)
        assert "\n" not in str(err.value) and "models that can:" in str(err.value)
        return
    summary = fast_dev_run(overrides, tmp_path)
    assert summary["plugins"]["model"]["name"] == model
    assert summary["params"] > 0
    assert any(k.startswith("test/") for k in summary["metrics"]) or summary["predictions"]


def test_rnn_bad_cell_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="model.cell='rnn'.*'lstm', 'gru'"):
        fast_dev_run(["model=rnn", "model.cell=rnn"], tmp_path)


# ----------------------------------------------------------------------------- padding


CASES = [
    ("cnn", {}, False),
    ("cnn", {"kernel_size": 4, "residual": False}, False),  # even kernel: asymmetric padding
    ("cnn", {}, True),
    ("rnn", {"cell": "lstm"}, False),
    ("rnn", {"cell": "gru", "layers": 1}, False),
    ("rnn", {"bidirectional": False}, True),
    ("mlp", {}, False),
    ("window_mlp", {}, False),
    ("window_mlp", {"window": 3}, True),
]


@pytest.mark.parametrize(("name", "params", "causal"), CASES)
def test_padding_never_leaks(name, params, causal):
    model = build(name, **params)
    x, mask = padded_batch([7, 3, 5])
    x_more, mask_more = padded_batch([7, 3, 5], extra=4)
    x_more[:, :7] = x  # same real tokens; the extra pads hold garbage
    x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
    x_more[:, :7] = x_more[:, :7].masked_fill(~mask.unsqueeze(-1), 123.0)  # garbage pads too
    with torch.no_grad():
        out = model(x, Ctx(key_padding_mask=mask, causal=causal))
        out_more = model(x_more, Ctx(key_padding_mask=mask_more, causal=causal))
    assert out_more.shape == (3, 11, D)
    torch.testing.assert_close(out_more[:, :7][mask], out[mask], atol=1e-5, rtol=1e-5)


def test_cnn_grid_padding_never_leaks():
    model = build("cnn", grid=True)
    rows, cols = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], -1).expand(2, 12, 2)  # (B, 12, 2)
    x, mask = padded_batch([12, 12])
    pad_pos = torch.tensor([[0, 0], [7, 9]]).expand(2, 2, 2)  # a taken cell, one off the grid
    x_more = torch.cat([x, torch.full((2, 2, D), 50.0)], 1)
    mask_more = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1)
    with torch.no_grad():
        out = model(x, Ctx(key_padding_mask=mask, positions=pos))
        out_more = model(
            x_more, Ctx(key_padding_mask=mask_more, positions=torch.cat([pos, pad_pos], 1))
        )
    torch.testing.assert_close(out_more[:, :12], out, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- context


def influence(model, n: int, i: int, causal: bool = False) -> torch.Tensor:
    """(n,) bool: which output positions change when input token i changes."""
    x, mask = padded_batch([n])
    x2 = x.clone()
    x2[0, i] += torch.linspace(-1, 1, D)  # not a constant shift: LayerNorm removes those
    ctx = Ctx(key_padding_mask=mask, causal=causal)
    with torch.no_grad():
        return (model(x, ctx) - model(x2, ctx)).abs().amax(-1)[0] > 1e-6


def test_cnn_receptive_field_is_what_it_sees():
    model = build("cnn", layers=3, kernel_size=3, dilation=2)
    assert model.receptive_field == 1 + 2 * (1 + 2 + 4)
    reach = (model.receptive_field - 1) // 2
    seen = influence(model, 40, 20)
    assert seen.nonzero().flatten().tolist() == list(range(20 - reach, 20 + reach + 1))


def test_window_mlp_receptive_field_is_what_it_sees():
    model = build("window_mlp", window=2, layers=2)
    seen = influence(model, 30, 15)
    assert seen.sum().item() == model.receptive_field == 9
    assert seen[15 - 4 : 15 + 5].all()


@pytest.mark.parametrize(
    ("name", "params"), [("cnn", {}), ("rnn", {"bidirectional": False}), ("window_mlp", {})]
)
def test_causal_outputs_ignore_the_future(name, params):
    seen = influence(build(name, **params), 12, 6, causal=True)
    assert not seen[:6].any() and seen[6:7].all()


def test_bidirectional_rnn_sees_both_ways_and_mlp_sees_nothing():
    assert influence(build("rnn"), 12, 6).all()
    assert influence(build("mlp"), 12, 6).nonzero().flatten().tolist() == [6]


# ----------------------------------------------------------------------------- 2-D CNN


def reference_grid_cnn(model, img: torch.Tensor) -> torch.Tensor:
    """The CNN's blocks written directly with conv2d on one (H, W, d) image."""
    h = img.unsqueeze(0)  # (1, H, W, d)
    for block in model.blocks:
        y = block.norm(h).permute(0, 3, 1, 2)  # (1, d, H, W)
        y = F.conv2d(
            y, block.conv.weight, block.conv.bias, padding="same", dilation=block.conv.dilation
        )
        y = F.gelu(y).permute(0, 2, 3, 1)
        h = h + y if block.residual else y
    return model.final_norm(h)[0]


@pytest.mark.parametrize(
    "params",
    [
        {"layers": 1, "residual": False, "dilation": 1},
        {"layers": 2, "kernel_size": 3, "dilation": 2},
    ],
)
def test_cnn_grid_matches_conv2d_on_the_image(params):
    model = build("cnn", grid=True, **params)
    g = torch.Generator().manual_seed(2)
    sizes = [(3, 4), (2, 3)]  # two images of different sizes in one batch
    n = 1 + 12  # CLS + the largest grid
    x = torch.zeros(2, n, D)
    pos = torch.full((2, n, 2), -1)
    mask = torch.zeros(2, n, dtype=torch.bool)
    images = []
    for b, (H, W) in enumerate(sizes):
        img = torch.randn(H, W, D, generator=g)
        images.append(img)
        order = torch.randperm(H * W, generator=g)  # tokens out of raster order
        rows, cols = order // W, order % W
        x[b, 0] = torch.randn(D, generator=g)  # CLS at position (-1, -1)
        x[b, 1 : 1 + H * W] = img[rows, cols]
        pos[b, 1 : 1 + H * W] = torch.stack([rows, cols], -1)
        mask[b, : 1 + H * W] = True
    with torch.no_grad():
        out = model(x, Ctx(key_padding_mask=mask, positions=pos))
        for b, (H, W) in enumerate(sizes):
            ref = reference_grid_cnn(model, images[b])  # (H, W, d)
            p = pos[b, 1 : 1 + H * W]
            torch.testing.assert_close(
                out[b, 1 : 1 + H * W], ref[p[:, 0], p[:, 1]], atol=1e-5, rtol=1e-5
            )
            # the CLS token is not convolved: only the final LayerNorm touches it
            torch.testing.assert_close(out[b, 0], model.final_norm(x[b, 0]))


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["cnn", "rnn", "window_mlp"])
def test_order_based_backbones_refuse_graph_tasks(name):
    cls = registry.get("model", name).cls
    with pytest.raises(ConfigError, match="graph"):
        cls.check_task(types.SimpleNamespace(gives_edges=True))
    cls.check_task(types.SimpleNamespace(gives_edges=False))  # sequences are fine


def test_mlp_serves_graph_tasks():
    registry.get("model", "mlp").cls.check_task(types.SimpleNamespace(gives_edges=True))


@pytest.mark.parametrize(
    ("name", "params", "ctx", "message"),
    [
        ("rnn", {}, Ctx(causal=True), "model.bidirectional=false"),
        ("cnn", {}, Ctx(positions=torch.zeros(1, 5, 2, dtype=torch.long)), "grid is False"),
        ("cnn", {"grid": True}, Ctx(), "got no 2-D positions"),
    ],
)
def test_refused_inputs(name, params, ctx, message):
    with pytest.raises(ConfigError, match=message):
        build(name, **params)(torch.randn(1, 5, D), ctx)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("rnn", {"cell": "rnn"}),
        ("cnn", {"layers": 0}),
        ("window_mlp", {"window": -1}),
        ("mlp", {"layers": 0}),
    ],
)
def test_bad_parameters(name, params):
    with pytest.raises(ConfigError, match="model\\."):
        build(name, **params)
