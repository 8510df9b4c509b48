"""`attnbench bench attention`: a tiny run writes the CSV, the plot and the table rows."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from attnbench import bench, registry
from attnbench.nn.ctx import Ctx


def test_tiny_attention_bench_writes_csv_png_and_table(tmp_path, capsys):
    out = tmp_path / "results"
    bench.main(
        [
            "attention",
            "--sizes",
            "64,128",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--min-time",
            "0",
            "--malloc",
            "default",
            "--variants",
            "dot,truncated,graph,sdpa_ref,dense_ref,graph_dense_ref,additive",
            "--window",
            "4",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "attention.csv")))
    assert [(r["variant"], r["n"]) for r in rows] == [
        (v, n)
        for v in (
            "dot",
            "truncated",
            "graph",
            "sdpa_ref",
            "dense_ref",
            "graph_dense_ref",
            "additive",
        )
        for n in ("64", "128")
    ]
    for r in rows:
        assert r["status"] == "ok", r
        assert float(r["time_ms"]) > 0 and float(r["peak_mb"]) > 0
        assert r["variant"] in printed
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dot/sdpa_ref time @N=128" in printed
    assert "additive peak MiB @N=128" in printed
    assert "truncated/dense_ref peak memory @N=128" in printed
    # dense attention allocates more than a 4-wide window once N grows
    peak = {(r["variant"], r["n"]): float(r["peak_mb"]) for r in rows}
    assert peak[("dot", "128")] > peak[("dot", "64")]


def test_failing_variant_gets_a_row_and_later_sizes_are_skipped(tmp_path, monkeypatch):
    real_build = bench.build_variant

    def build(name, args):
        if name == "dot":
            raise RuntimeError("boom\nsecond line")
        return real_build(name, args)

    monkeypatch.setattr(bench, "build_variant", build)
    out = tmp_path / "r"
    bench.main(
        [
            "attention",
            "--sizes",
            "32,64",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--min-time",
            "0",
            "--malloc",
            "default",
            "--variants",
            "dot,sdpa_ref",
            "--d-model",
            "16",
            "--heads",
            "2",
            "--out",
            str(out),
        ]
    )
    rows = list(csv.DictReader(open(out / "attention.csv")))
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("dot", "failed"),
        ("dot", "skipped"),
        ("sdpa_ref", "ok"),
        ("sdpa_ref", "ok"),
    ]
    assert rows[0]["note"] == "RuntimeError: boom"
    assert math.isnan(float(rows[0]["time_ms"]))


def test_bench_rejects_unknown_variant(tmp_path):
    with pytest.raises(registry.UnknownPluginError, match="did you mean 'truncated'"):
        bench.main(
            ["attention", "--variants", "truncatd", "--malloc", "default", "--out", str(tmp_path)]
        )


def test_cpu_peak_counts_what_a_pass_allocates():
    def alloc():
        a = torch.ones(1 << 20)  # 4 MiB
        b = torch.ones(1 << 20)
        del a, b

    peak = bench.cpu_peak_bytes(alloc)
    assert 8 * 2**20 <= peak < 9 * 2**20
    assert bench.cpu_peak_bytes(alloc) == peak  # no drift between measurements


def test_graph_dense_reference_mask_follows_the_edges():
    g = torch.Generator().manual_seed(0)
    edges = bench.random_edges(2, 10, 3, torch.device("cpu"), g)
    assert edges.shape[0] == 2 and edges.size(1) <= 60
    assert ((edges[0] // 10) == (edges[1] // 10)).all()  # edges stay inside their sample
    mask = bench.GraphDenseRef(8, 2).mask(Ctx(edges=edges), 2, 10, torch.device("cpu"))
    expected = torch.eye(10, dtype=torch.bool).repeat(2, 1, 1)
    expected[edges[0] // 10, edges[0] % 10, edges[1] % 10] = True
    assert torch.equal(mask[:, 0], expected)


def test_dense_reference_computes_what_sdpa_does_and_stores_the_scores():
    torch.manual_seed(0)
    dense, fused = bench.DenseRef(16, 2), bench.SdpaRef(16, 2)
    fused.load_state_dict(dense.state_dict())
    x = torch.randn(2, 40, 16)
    torch.testing.assert_close(dense(x, x, x, ctx=Ctx())[0], fused(x, x, x, ctx=Ctx())[0])

    def step(module):
        return lambda: module(x, x, x, ctx=Ctx())[0].sum().backward()

    scores_bytes = 2 * 2 * 40 * 40 * 4  # one (B, h, N, N) float32 tensor
    assert bench.cpu_peak_bytes(step(dense)) >= bench.cpu_peak_bytes(step(fused)) + scores_bytes


def test_min_time_adds_passes(monkeypatch):
    calls = []
    module = bench.SdpaRef(8, 2)
    real_forward = module.forward
    monkeypatch.setattr(module, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    args = bench.parser().parse_args(
        [
            "attention",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--min-time",
            "0",
            "--d-model",
            "8",
            "--heads",
            "2",
        ]
    )
    bench.measure(module, 16, args, None, torch.device("cpu"))
    few = len(calls)
    calls.clear()
    args.min_time = 0.2
    bench.measure(module, 16, args, None, torch.device("cpu"))
    assert few == 3  # two timed passes + the memory pass
    assert len(calls) > few
