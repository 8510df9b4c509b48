"""`attnbench bench attention`: a tiny run writes the CSV, the plot and the table rows; the
ratios, probes and variant parameters come from the benchmark's config, and the core names
no plugin."""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
from pathlib import Path

import pytest
import torch

from attnbench import bench, registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError, PluginParameterError

ROOT = Path(__file__).resolve().parents[1]


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
            "dot,truncated,graph,proj_ref,sdpa_ref,dense_ref,graph_dense_ref,additive",
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
            "proj_ref",
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
        assert r["dtype"] == "fp32"  # the CPU's default
        assert float(r["tflops"]) > 0 and math.isnan(float(r["peak_fraction"]))  # CPU: n/a
        assert r["variant"] in printed
    assert "÷ proj_ref" in printed and "÷ sdpa_ref" in printed
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dot/sdpa_ref time @N=128" in printed
    assert "additive peak MiB @N=128" in printed
    assert "truncated/dense_ref peak memory @N=128" in printed
    found = json.loads((out / "ratios.json").read_text())
    assert list(found) == [
        "dot/sdpa_ref time @N=64",
        "dot/sdpa_ref time @N=128",
        "multihead/sdpa_ref time @N=64",  # not run: null
        "multihead/sdpa_ref time @N=128",
        "dot/truncated time (speed-up) @N=128",
        "truncated/dot peak memory @N=128",
        "truncated/dense_ref peak memory @N=128",
        "truncated time growth N=64->128 (x2 length)",
        "graph_dense_ref/graph time (speed-up) @N=128",
        "graph_dense_ref/graph peak memory @N=128",
        "truncated/proj_ref time @N=128",
        "graph/proj_ref time @N=128",
        "dot/proj_ref time @N=128",
        "additive peak MiB @N=128,d=64,B=1,h=1",  # the probe, N capped at the largest size
        "additive fwd+bwd ms @N=128,d=64,B=1,h=1",
    ]
    verdicts = json.loads((out / "targets.json").read_text())
    assert verdicts["additive peak MiB @N=128,d=64,B=1,h=1"]["target"] == "< 2048"
    assert verdicts["additive peak MiB @N=128,d=64,B=1,h=1"]["verdict"] == "PASS"
    assert verdicts["dot/sdpa_ref time @N=64"]["target"] == "<= 1.1"
    assert "multihead/sdpa_ref time @N=64" not in verdicts  # no target in the config
    assert found["multihead/sdpa_ref time @N=64"] is None
    assert found["dot/sdpa_ref time @N=128"] > 0
    assert found["additive peak MiB @N=128,d=64,B=1,h=1"] > 0
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


# ----------------------------------------------------------------------------- the config


def _rows(values: dict[tuple[str, int], tuple[float, float]]) -> list[bench.Row]:
    """Rows with given (time_ms, peak_mb); a NaN time stands for a failed row."""
    rows = []
    for (variant, n), (ms, mb) in values.items():
        row = bench.Row(variant, n, 1, 4, 128, ms, mb)
        if math.isnan(ms):
            row.status = "failed"
        rows.append(row)
    return rows


def test_default_config_gives_the_readme_ratios_in_order():
    """The shipped conf/bench/attention.yaml computes the ratios the README reports, with
    the same keys as before the config existed."""
    nan = math.nan
    rows = _rows(
        {
            ("sdpa_ref", 64): (2.0, 1.0),
            ("sdpa_ref", 128): (4.0, 1.0),
            ("dot", 64): (1.0, 4.0),
            ("dot", 128): (3.0, 8.0),
            ("multihead", 64): (2.0, 4.0),
            ("multihead", 128): (nan, nan),
            ("truncated", 64): (0.5, 1.0),
            ("truncated", 128): (1.0, 2.0),
            ("dense_ref", 128): (9.0, 16.0),
            ("graph", 128): (1.5, 2.5),
            ("graph_dense_ref", 128): (6.0, 10.0),
            ("proj_ref", 128): (0.5, 1.0),
        }
    )
    config = bench.load_config()
    found = bench.ratios(rows, [64, 128], config.comparisons, {"probe": 7.0})
    expected = {
        "dot/sdpa_ref time @N=64": 0.5,
        "dot/sdpa_ref time @N=128": 0.75,
        "multihead/sdpa_ref time @N=64": 1.0,
        "multihead/sdpa_ref time @N=128": nan,  # multihead failed there
        "dot/truncated time (speed-up) @N=128": 3.0,
        "truncated/dot peak memory @N=128": 0.25,
        "truncated/dense_ref peak memory @N=128": 0.125,
        "truncated time growth N=64->128 (x2 length)": 2.0,
        "graph_dense_ref/graph time (speed-up) @N=128": 4.0,
        "graph_dense_ref/graph peak memory @N=128": 4.0,
        "truncated/proj_ref time @N=128": 2.0,
        "graph/proj_ref time @N=128": 3.0,
        "dot/proj_ref time @N=128": 6.0,
        "probe": 7.0,
    }
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, nan_ok=True), key
    assert config.params == {"truncated": {"window": 64}}  # the README's window
    assert config.work == {"truncated": "window", "graph": "edges"}
    assert [(p.variant, p.n, p.d_model, p.heads, p.batch) for p in config.probes] == [
        ("additive", 4096, 64, 1, 1)
    ]
    # the CPU targets: dot/SDPA <= 1.1, truncated and graph >= 5x, additive < 2 GB
    found["additive peak MiB @N=4096,d=64,B=1,h=1"] = 2048.0
    verdicts = {k: t.verdict(found[k]) for k, t in config.targets(found, [64, 128]).items()}
    assert verdicts == {
        "dot/sdpa_ref time @N=64": "PASS",
        "dot/sdpa_ref time @N=128": "PASS",
        "dot/truncated time (speed-up) @N=128": "FAIL",  # 3 < 5
        "graph_dense_ref/graph time (speed-up) @N=128": "FAIL",  # 4 < 5
        "additive peak MiB @N=4096,d=64,B=1,h=1": "FAIL",  # not below 2048
    }


def test_growth_needs_two_sizes():
    growth = bench.Comparison("truncated", "time_ms", "growth")
    assert growth.evaluate(_rows({("truncated", 64): (1.0, 1.0)}), [64]) == {}


def test_a_config_file_chooses_the_ratios_and_probes(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text(
        "comparisons:\n"
        "  - {numerator: dense_ref, denominator: sdpa_ref, field: peak_mb, at: each}\n"
        "probes:\n"
        "  - {variant: sdpa_ref, n: 48, d_model: 16, heads: 2, batch: 1}\n"
        "  - {variant: graph_dense_ref, n: 48, d_model: 16, heads: 2, batch: 1}\n"
    )
    out = tmp_path / "r"
    bench.main(
        [
            "attention",
            "--config",
            str(config),
            "--variants",
            "sdpa_ref,dense_ref",
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
            "--d-model",
            "16",
            "--heads",
            "2",
            "--out",
            str(out),
        ]
    )
    found = json.loads((out / "ratios.json").read_text())
    # graph_dense_ref was not benchmarked: its probe is skipped
    assert list(found) == [
        "dense_ref/sdpa_ref peak memory @N=32",
        "dense_ref/sdpa_ref peak memory @N=64",
        "sdpa_ref peak MiB @N=48,d=16,B=1,h=2",
        "sdpa_ref fwd+bwd ms @N=48,d=16,B=1,h=2",
    ]
    # the dense reference stores the (B, h, N, N) scores the fused one does not
    assert found["dense_ref/sdpa_ref peak memory @N=64"] > 1
    assert "dense_ref/sdpa_ref peak memory @N=64" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text,error,match",
    [
        (
            "comparisons:\n  - {numerator: dto, denominator: sdpa_ref, field: time_ms, at: top}\n",
            ConfigError,
            "unknown variant 'dto'; did you mean 'dot'",
        ),
        (
            "comparisons:\n  - {numerator: dot, denominator: sdpa_ref, field: time, at: top}\n",
            ConfigError,
            "field 'time' is not one of time_ms, peak_mb",
        ),
        (
            "comparisons:\n  - {numerator: dot, denominator: sdpa_ref, field: time_ms, at: max}\n",
            ConfigError,
            "at 'max' is not one of each, top, growth",
        ),
        (
            "comparisons:\n  - {numerator: dot, denominator: dot, field: time_ms, at: growth}\n",
            ConfigError,
            "none with growth",
        ),
        (
            "comparisons:\n  - {numerator: dot, field: time_ms, at: top}\n",
            ConfigError,
            "give a denominator",
        ),
        (
            "comparisons:\n  - {numerator: dot, denominator: sdpa_ref, feild: time_ms, at: top}\n",
            ConfigError,
            "comparisons\\[0\\]: no key 'feild'; did you mean 'field'",
        ),
        (
            "probes:\n  - {variant: dot, n: 64, d_model: 64, heads: 1}\n",
            ConfigError,
            "probes\\[0\\]: missing batch",
        ),
        (
            "probes:\n  - {variant: dot, n: 0, d_model: 64, heads: 1, batch: 1}\n",
            ConfigError,
            "n must be a positive integer, not 0",
        ),
        (
            "probes:\n  - {variant: dot, n: 64, d_model: 64, heads: 3, batch: 1}\n",
            ConfigError,
            "d_model 64 is not divisible by heads",
        ),
        ("params:\n  truncated: {windw: 4}\n", PluginParameterError, "did you mean 'window'"),
        ("params:\n  sdpa_ref: {window: 4}\n", ConfigError, "'sdpa_ref' takes no parameters"),
        ("ratios: []\n", ConfigError, "unknown key 'ratios'"),
        (
            "comparisons:\n  - {numerator: dot, denominator: sdpa_ref, field: time_ms, at: top,"
            " max: fast}\n",
            ConfigError,
            "comparisons\\[0\\]: max must be a number, not 'fast'",
        ),
        (
            "probes:\n  - {variant: dot, n: 64, d_model: 64, heads: 1, batch: 1, max_mb: .nan}\n",
            ConfigError,
            "max_mb must be a number",
        ),
        (
            "work:\n  truncated: sparse\n",
            ConfigError,
            "not one of dense, window, edges, projections",
        ),
        ("work:\n  truncatd: window\n", ConfigError, "did you mean 'truncated'"),
        ("- just a list\n", ConfigError, "expected a mapping"),
        ("comparisons: [\n", ConfigError, "not valid YAML"),
    ],
)
def test_a_bad_config_is_refused_with_one_line(tmp_path, text, error, match):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(error, match=match) as info:
        bench.load_config(config)
    assert "\n" not in str(info.value)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        bench.main(
            [
                "attention",
                "--config",
                str(tmp_path / "nothere.yaml"),
                "--malloc",
                "default",
                "--out",
                str(tmp_path),
            ]
        )


def test_variant_parameters_come_from_config_then_window_then_param():
    config = bench.load_config()
    variants = ["dot", "truncated", "sdpa_ref"]

    def resolved(window=None, *params):
        args = bench.parser().parse_args(
            ["attention", *(f"--param={p}" for p in params)]
            + ([] if window is None else ["--window", str(window)])
        )
        return bench.variant_params(config, variants, args.window, args.param)

    assert resolved() == {"truncated": {"window": 64}}
    assert resolved(4) == {"truncated": {"window": 4}}
    assert resolved(4, "truncated.window=16", "dot.dropout=0.25") == {
        "truncated": {"window": 16},
        "dot": {"dropout": 0.25},
    }
    args = argparse.Namespace(d_model=16, heads=2, params=resolved(None, "truncated.window=3"))
    assert bench.build_variant("truncated", args).window == 3


@pytest.mark.parametrize(
    "param,error,match",
    [
        ("truncated.windw=3", PluginParameterError, "did you mean 'window'"),
        ("sdpa_ref.window=3", ConfigError, "'sdpa_ref' takes no parameters"),
        ("additive.dropout=0.1", ConfigError, "'additive' is not among the --variants"),
        ("trunc.window=3", ConfigError, "unknown variant 'trunc'"),
    ],
)
def test_a_bad_param_is_refused(param, error, match):
    args = bench.parser().parse_args(["attention", "--param", param])
    with pytest.raises(error, match=match):
        bench.variant_params(bench.load_config(), ["truncated", "sdpa_ref"], None, args.param)


def test_a_param_without_variant_and_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        bench.parser().parse_args(["attention", "--param", "window=3"])
    assert info.value.code == 2
    assert "give VARIANT.PARAMETER=VALUE" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dtype, FLOPs


def _args(*extra: str) -> argparse.Namespace:
    args = bench.parser().parse_args(
        ["attention", "--repeats", "1", "--warmup", "0", "--min-time", "0", *extra]
    )
    args.params, args.work = {}, {}
    return args


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_pass_runs_in_the_chosen_dtype(dtype, expected):
    module = bench.SdpaRef(8, 2)
    seen = []
    real_attend = module.attend
    module.attend = lambda q, k, v, mask: seen.append(q.dtype) or real_attend(q, k, v, mask)
    args = _args("--d-model", "8", "--heads", "2", "--dtype", dtype)
    bench.measure(module, 16, args, None, torch.device("cpu"))
    assert seen and set(seen) == {expected}
    assert module.qkv.weight.grad is not None  # the backward pass ran too


def test_rows_record_their_dtype(tmp_path):
    out = tmp_path / "r"
    bench.main(
        ["attention", "--sizes", "16", "--repeats", "1", "--warmup", "0", "--min-time", "0"]
        + ["--malloc", "default", "--variants", "sdpa_ref", "--d-model", "8", "--heads", "2"]
        + ["--dtype", "bf16", "--out", str(out)]
    )
    rows = list(csv.DictReader(open(out / "attention.csv")))
    assert [(r["variant"], r["dtype"], r["status"]) for r in rows] == [("sdpa_ref", "bf16", "ok")]


def test_tflops_count_each_variants_own_work(monkeypatch):
    """B 2, N 16, d 8, h 2 (dh 4), a pass of 2 ms. By hand: projections 8·B·N·d² = 16384
    FLOPs; dense: B·N² = 512 pairs -> 4·h·pairs·dh = 16384; a window of 3 visits
    4+5+6+7·10+6+5+4 = 100 keys per sample -> 200 pairs -> 6400; 5 edges (one a self-loop)
    + 32 self-loops - 1 counted twice -> 36 pairs -> 1152; forward+backward = 3 × forward."""
    monkeypatch.setattr(bench, "measure", lambda *a: (2.0, 1.0, ""))
    edges = torch.tensor([[0, 1, 2, 17, 20], [1, 1, 0, 16, 18]])
    monkeypatch.setattr(bench, "random_edges", lambda *a: edges)
    args = _args("--sizes", "16", "--batch", "2", "--d-model", "8", "--heads", "2")
    args.params = {"truncated": {"window": 3}}
    args.work = {"truncated": "window", "graph": "edges"}
    expected_flops = {
        "dot": 3 * (16384 + 16384),
        "sdpa_ref": 3 * (16384 + 16384),
        "truncated": 3 * (16384 + 6400),
        "graph": 3 * (16384 + 1152),
        "graph_dense_ref": 3 * (16384 + 1152),  # the edges are its useful work, not N²
        "proj_ref": 3 * 16384,
    }
    for name, flops in expected_flops.items():
        [row] = bench.run_variant(name, args, torch.device("cpu"))
        assert row.status == "ok", row
        assert row.tflops == pytest.approx(flops / 2e-3 / 1e12), name
        assert math.isnan(row.peak_fraction)  # a CPU has no entry in the peak table


def test_a_window_as_wide_as_the_sequence_counts_every_pair():
    assert bench.visited_pairs("window", 10, 3, 9, None) == 3 * 100
    assert bench.visited_pairs("window", 10, 1, 0, None) == 10  # each query itself only
    assert bench.visited_pairs("dense", 10, 3, 0, None) == 300
    assert bench.visited_pairs("projections", 10, 3, 0, None) == 0


def test_the_window_default_comes_from_the_plugin_and_must_be_an_integer():
    args = _args()
    args.work = {"truncated": "window", "dot": "window"}
    default = registry.get("attention", "truncated").options["window"]
    assert bench.variant_work("truncated", args) == ("window", default)
    with pytest.raises(ConfigError, match="'dot' is window but it has no integer window"):
        bench.variant_work("dot", args)


@pytest.mark.parametrize(
    "name,dtype,peak",
    [
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA H200", "fp32", 67.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),  # the specific entry wins over H100's
        ("NVIDIA H100 80GB HBM3", "fp16", 989.0),
        ("Some Future GPU", "bf16", math.nan),
    ],
)
def test_device_peaks_by_name(monkeypatch, name, dtype, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert bench.device_peak(torch.device("cuda"), dtype) == pytest.approx(peak, nan_ok=True)
    assert math.isnan(bench.device_peak(torch.device("cpu"), dtype))


def test_proj_ref_keeps_every_projection_and_has_no_attention_step():
    torch.manual_seed(0)
    ref = bench.ProjRef(8, 2)
    x = torch.randn(1, 5, 8)
    y, _ = ref(x, x, x, ctx=Ctx())
    y.sum().backward()
    q, k, v = ref.qkv.weight.grad.chunk(3)  # every projection gets a gradient
    assert q.abs().sum() > 0 and k.abs().sum() > 0 and v.abs().sum() > 0
    # no mixing across positions: a change at one position leaves the others' outputs alone
    x2 = x.clone()
    x2[0, 0] += 1.0
    y2, _ = ref(x2, x2, x2, ctx=Ctx())
    torch.testing.assert_close(y2[0, 1:], y[0, 1:].detach())


def test_compile_wraps_the_module_and_warms_it_up(monkeypatch):
    compiled, passes = [], []

    def fake_compile(module):
        compiled.append(type(module).__name__)
        real_forward = module.forward
        module.forward = lambda *a, **k: passes.append(1) or real_forward(*a, **k)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = _args("--sizes", "16", "--d-model", "8", "--heads", "2", "--compile")
    [row] = bench.run_variant("sdpa_ref", args, torch.device("cpu"))
    assert row.status == "ok" and compiled == ["SdpaRef"]
    assert len(passes) == 3  # one warm-up (compilation) despite --warmup 0, one timed, memory


# ----------------------------------------------------------------------------- no plugin names

CORE = ROOT / "attnbench"
# String constants equal to a plugin's name by coincidence: (file, function, constant) -> why.
# Keyed by function so that the same word naming a plugin elsewhere in the file still fails.
COINCIDENCES = {
    ("lit.py", "make_optimizer", "none"): "optim.scheduler=none, not the posenc",
    ("validate.py", "<module>", "none"): "optim.scheduler=none, not the posenc",
    ("analysis/map_figures.py", "<module>", "none"): "matplotlib's svg.fonttype",
    ("analysis/plot.py", "<module>", "none"): "a matplotlib setting, not the posenc",
    # the data directory's layout (data_dir/sentiment/, pos/, ...), shared with shared/data
    ("data/download.py", "<module>", "pos"): "a data folder",
    ("data/download.py", "<module>", "sentiment"): "a data folder",
    ("data/download.py", "<module>", "translation"): "a data folder",
    ("data/download.py", "<module>", "graph"): "a data folder; the Planetoid file ind.cora.graph",
    (
        "testing/attention.py",
        "_attention_properties",
        "graph",
    ): "the name of a conformance property",
    ("testing/backbone.py", "check_backbone", "graph"): "the name of a conformance property",
    ("testing/cli.py", "parse_value", "none"): "a spelling of null on the command line",
    ("nn/flex.py", "graph_mask", "graph"): "the block-mask cache's tag for edge masks",
}
TEXT_KEYWORDS = ("help", "epilog", "description", "usage")  # argparse text with examples
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _prose(tree: ast.AST) -> set[int]:
    """ids of the string constants that are not code naming something: docstrings, argparse
    help/epilog text, and attribute names given to getattr/hasattr/setattr."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, *SCOPES)):
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg in TEXT_KEYWORDS:
            skip.update(id(n) for n in ast.walk(node.value))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
        ):
            skip.add(id(node.args[1]))
    return skip


def _constants(node: ast.AST, scope: str = "<module>"):
    """(string constant node, the function or class it is in) under node."""
    for child in ast.iter_child_nodes(node):
        inner = scope
        if isinstance(child, SCOPES):
            inner = child.name if scope == "<module>" else f"{scope}.{child.name}"
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child, scope
        yield from _constants(child, inner)


def plugin_names_in(path: Path, names: dict[str, list[str]]) -> list[tuple[int, str, str]]:
    """(line, function, constant) of each string constant in path's code that is a plugin's
    name or selects one as a config override (``model=NAME``). Prose (a constant with spaces,
    such as a usage text's example command lines) is not code naming a plugin."""
    tree = ast.parse(path.read_text(), filename=str(path))
    prose, hits = _prose(tree), set()
    for node, scope in _constants(tree):
        if id(node) in prose:
            continue
        for kind, kind_names in names.items():
            for name in kind_names:
                override = f"{kind}={name}" in node.value and len(node.value.split()) == 1
                if node.value == name or override:
                    hits.add((node.lineno, scope, node.value))
    return sorted(hits)


def test_the_scan_finds_plugin_names(tmp_path):
    """The scanner below would catch the ways the core used to name plugins."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""docstring naming dot is fine"""\n'
        "import argparse\n"
        'p = argparse.ArgumentParser(epilog="e.g. truncated")\n'
        'p.add_argument("--x", help="e.g. dot")\n'
        'for v in ("dot", "multihead"):\n'
        "    pass\n"
        "def match(ref):\n"
        '    return ref.pop("_name_", "transformer")\n'
        'overrides = ["task=sentiment"]\n'
        'flag = getattr(posenc, "relative", False)\n'
        'USAGE = "example: attnbench model=transformer attention=dot"\n'
    )
    names = {
        "attention": ["dot", "multihead", "truncated"],
        "model": ["transformer"],
        "task": ["sentiment"],
        "posenc": ["relative"],
    }
    assert plugin_names_in(sample, names) == [
        (5, "<module>", "dot"),
        (5, "<module>", "multihead"),
        (8, "match", "transformer"),
        (9, "<module>", "task=sentiment"),
    ]


def test_the_core_names_no_plugin():
    """attnbench's own modules reach plugins only through the registry (and the benchmark
    through its config): no registered plugin's name appears in their code."""
    names = registry.available()
    assert names["attention"] and names["model"]  # the scan has names to look for
    found = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel.startswith("plugins/"):  # the plugins themselves, should they move in here
            continue
        hits = [
            (line, scope, value)
            for line, scope, value in plugin_names_in(path, names)
            if (rel, scope, value) not in COINCIDENCES
        ]
        if hits:
            found[rel] = hits
    assert not found, f"the core names plugins (line, function, name): {found}"


def test_a_target_whose_variant_was_not_measured_fails():
    """Out of memory, failed or skipped: a number that is missing has not met its target."""
    target = bench.Target(max=1.5)
    assert target.verdict(float("nan")).startswith("FAIL")
    assert target.verdict(1.2) == "PASS" and target.verdict(1.6) == "FAIL"
