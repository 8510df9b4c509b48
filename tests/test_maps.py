"""``attnbench maps`` on small finished runs of every task kind, the capture mechanism, head
statistics and attention rollout."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from attnbench import registry
from attnbench.analysis.capture import capture
from attnbench.analysis.maps import main
from attnbench.analysis.stats import distance_and_entropy, rollout
from attnbench.config import compose

SMALL = ["model.d_model=16", "model.heads=2", "model.layers=2"]
RUNS = {
    "pos": ["task=pos", *SMALL],
    "sentiment": ["task=sentiment", *SMALL],
    "truncated": ["task=sentiment", "attention=truncated", "attention.window=2", *SMALL],
    "translation": ["task=translation", *SMALL],
    "rnn": [
        "task=translation",
        "model=rnn",
        "attention=additive",
        "model.d_model=16",
        "model.heads=2",
        "model.layers=1",
    ],
    # Bahdanau's placement: the decoder attends once per target step, one query each
    "bahdanau": [
        "task=translation",
        "model=rnn",
        "attention=additive",
        "model.attention_placement=bahdanau",
        "model.d_model=16",
        "model.heads=2",
        "model.layers=1",
    ],
    "image": ["task=image", "task.pooling=cls", *SMALL],
    "graph": ["task=graph", "attention=graph", *SMALL],
    "cnn": ["task=sentiment", "model=cnn", "model.d_model=16"],
    # parameter matching builds the transformer as the reference: 4 heads, 1 layer, d=32
    "matched": [
        "experiment=compare_backbones",
        "task=sentiment",
        *SMALL,
        "match_params.reference.d_model=32",
        "match_params.reference.layers=1",
    ],
}
TOL = 2e-3  # maps.json rounds to 4 decimals: a row of ~30 weights sums within this of 1


def make_run(out: Path, overrides: list[str]) -> Path:
    """A finished run as the CLI leaves it: checkpoints/last.ckpt, summary.json and the
    composed config (without Hydra's own node) in .hydra/config.yaml."""
    from attnbench.train import run

    cfg = compose(
        [
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.accelerator=cpu",
            "logger=none",
            *overrides,
        ],
        out,
    )
    run(cfg)
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(job, out / ".hydra" / "config.yaml")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {name: make_run(base / name, overrides) for name, overrides in RUNS.items()}


def maps(run: Path, out: Path, *args: str) -> dict:
    assert main([str(run), "--out", str(out), *args]) == 0
    return json.loads((out / "maps.json").read_text())


def check_rows(matrix: list[list[float]], allow_empty: bool = False) -> None:
    for row in matrix:
        assert all(0.0 <= w <= 1.0 for w in row)
        total = sum(row)
        assert abs(total - 1.0) < TOL or (allow_empty and total == 0.0), total


def panel_titles(svg: Path) -> list[str]:
    """The heatmap panels' titles in an SVG (its text stays text)."""
    text = svg.read_text()
    return [
        t
        for t in ("layer 0 head 0", "layer 0 head 1", "layer 1 head 0", "layer 1 head 1")
        if f">{t}<" in text
    ]


# ----------------------------------------------------------------------------- token tasks


def test_token_task_grid_of_layers_by_heads(runs, tmp_path):
    data = maps(runs["pos"], tmp_path)
    assert data["task"] == "pos" and data["kind"] == "tokens"
    assert [e["index"] for e in data["examples"]] == [0, 1, 2]
    for e in data["examples"]:
        n = len(e["tokens"])
        assert n > 1 and len(e["layers"]) == 2  # model.layers
        for layer in e["layers"]:
            assert len(layer) == 2  # model.heads
            for head in layer:
                assert len(head) == n and all(len(row) == n for row in head)
                check_rows(head)
    for i in (0, 1, 2):
        for suffix in (".png", ".svg"):
            assert (tmp_path / f"tokens_{i}{suffix}").stat().st_size > 1000
        assert len(panel_titles(tmp_path / f"tokens_{i}.svg")) == 4  # layers x heads


def test_layer_and_head_choose_one_panel(runs, tmp_path):
    maps(runs["pos"], tmp_path, "--index", "4", "--layer", "-1", "--head", "0")
    assert panel_titles(tmp_path / "tokens_4.svg") == ["layer 1 head 0"]


def test_run_with_matched_widths_loads_the_model_it_trained(runs, tmp_path):
    data = maps(runs["matched"], tmp_path, "--index", "0")
    [e] = data["examples"]
    assert len(e["layers"]) == 1 and len(e["layers"][0]) == 4  # the reference's shape


def test_text_is_tokenised_with_the_task_vocabulary(runs, tmp_path):
    data = maps(runs["sentiment"], tmp_path, "--text", "The movie was Zzyzx great")
    [e] = data["examples"]
    assert e["index"] is None and e["text"] == "The movie was Zzyzx great"
    assert e["tokens"] == ["the", "movie", "was", "<unk>", "great"]  # lowercased, unknown
    assert len(e["layers"][0][0]) == 5
    assert (tmp_path / "tokens_text.png").is_file()


def test_truncated_attention_shows_its_window(runs, tmp_path):
    data = maps(runs["truncated"], tmp_path, "--index", "70,0,5")  # two loader batches
    assert [e["index"] for e in data["examples"]] == [70, 0, 5]
    for e in data["examples"]:
        for layer in e["layers"]:
            for head in layer:
                check_rows(head)
                for i, row in enumerate(head):
                    assert all(w == 0.0 for j, w in enumerate(row) if abs(i - j) > 2)
                    assert any(w > 0.0 for j, w in enumerate(row) if j != i)


# ----------------------------------------------------------------------------- translation


@pytest.mark.parametrize("run, layers", [("translation", 2), ("rnn", 1), ("bahdanau", 1)])
def test_translation_alignment_is_target_by_source(runs, tmp_path, run, layers):
    data = maps(runs[run], tmp_path, "--index", "0,3")
    assert data["kind"] == "alignment"
    assert max(len(e["target"]) for e in data["examples"]) > 1  # more than one target row
    for e in data["examples"]:
        assert len(e["layers"]) == layers  # the decoder's cross-attention, one per layer
        assert e["source"] and e["target"]
        for layer in e["layers"]:
            assert len(layer) == 2  # heads
            for head in layer:
                assert len(head) == len(e["target"])
                assert all(len(row) == len(e["source"]) for row in head)
                check_rows(head)
    assert (tmp_path / "alignment_0.svg").is_file() and (tmp_path / "alignment_3.png").is_file()


def test_pos_map_of_a_sentence_given_as_text(runs, tmp_path):
    data = maps(runs["pos"], tmp_path, "--text", "I saw a Qwzx saw")
    [e] = data["examples"]
    assert e["tokens"] == ["i", "saw", "a", "<unk>", "saw"]  # the words, lowercased
    assert len(e["layers"][0][0]) == 5 and len(e["layers"][0][0][0]) == 5  # 5 × 5 per head


def test_translation_text(runs, tmp_path):
    data = maps(runs["translation"], tmp_path, "--text", "a b zz c")
    [e] = data["examples"]
    assert e["source"] == ["a", "b", "<unk>", "c"]
    assert len(e["layers"][-1][0][0]) == 4


# ----------------------------------------------------------------------------- images, graphs


def test_image_pooled_query_and_rollout(runs, tmp_path):
    data = maps(runs["image"], tmp_path, "--index", "0")
    [e] = data["examples"]
    assert data["kind"] == "patches" and e["query"] == "CLS"
    # digits are 8x8 with 2x2 patches: 16 patches on a 4x4 grid, then the CLS token
    assert len(e["tokens"]) == 17 and e["tokens"][-1] == "CLS" and e["tokens"][0] == "0,0"
    for layer in e["layers"]:
        for head in layer:
            check_rows(head)
    grid = torch.tensor(e["rollout"])
    assert grid.shape == (4, 4) and bool(((grid >= 0) & (grid <= 1)).all())
    assert 0.0 < float(grid.sum()) < 1.0 + TOL  # the CLS row's share on the patches
    svg = (tmp_path / "patches_0.svg").read_text()
    assert all(f">{t}<" in svg for t in ("input", "layer 0", "layer 1", "rollout"))


def test_graph_neighbourhoods_follow_the_edges(runs, tmp_path):
    data = maps(runs["graph"], tmp_path, "--index", "0,7")
    task = registry.build("task", "graph", data_dir=str(tmp_path))
    task.setup()
    edges = set(map(tuple, task.graph.edges.T.tolist()))
    assert data["kind"] == "nodes" and [e["index"] for e in data["examples"]] == [0, 7]
    for e in data["examples"]:
        nodes = [int(t) for t in e["tokens"]]
        assert nodes[0] == e["index"]
        assert set(nodes[1:]) == {k for (j, k) in edges if j == e["index"]}
        for layer in e["layers"]:
            for head in layer:
                check_rows([head[0]])  # the node's own row: all its keys are shown
                for a, row in zip(nodes, head):  # off the edges (and not itself): zero
                    assert all(
                        w == 0.0 for b, w in zip(nodes, row) if (a, b) not in edges and a != b
                    )
    assert (tmp_path / "node_7.png").is_file()


# ----------------------------------------------------------------------------- errors


def test_model_without_attention_is_one_line_exit_2(runs, tmp_path, capsys):
    assert main([str(runs["cnn"]), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cnn' has no attention" in err


def test_not_a_run_is_one_line_exit_2(runs, tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert ".hydra/config.yaml" in capsys.readouterr().err
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_bytes(
        (runs["pos"] / ".hydra" / "config.yaml").read_bytes()
    )
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoints/last.ckpt" in err
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    assert main([str(tmp_path)]) == 2
    assert "not a loadable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "run, args, says",
    [
        ("pos", ["--layer", "2"], "--layer 2: the model has 2 layers"),
        ("sentiment", ["--head", "-3"], "--head -3: the model has 2 heads"),
        ("sentiment", ["--index", "a,b"], "comma-separated integers"),
        ("sentiment", ["--split", "dev"], "not one of train, val, test"),
        ("image", ["--text", "a cat"], "cannot read --text"),
    ],
)
def test_bad_options_are_one_line_exit_2(runs, tmp_path, capsys, run, args, says):
    assert main([str(runs[run]), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert not (tmp_path / "out" / "maps.json").exists()


def test_index_past_the_split_is_one_line_exit_2(runs, tmp_path, capsys):
    assert main([str(runs["sentiment"]), "--out", str(tmp_path), "--index", "0,99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--index 99999" in err


def test_maps_never_import_lightning(runs, tmp_path):
    code = (
        "import sys; from attnbench.analysis.maps import main; "
        f"rc = main([{str(runs['pos'])!r}, '--out', {str(tmp_path)!r}]); "
        "print(rc, sorted(m for m in sys.modules if 'lightning' in m))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split("\n")[-2] == "0 []", result.stderr


# ----------------------------------------------------------------------------- statistics


def test_stats_per_layer_and_head(runs, tmp_path):
    main([str(runs["pos"]), "--out", str(tmp_path), "--stats", "--batches", "3"])
    lines = (tmp_path / "head_stats.csv").read_text().splitlines()
    header, rows = (
        lines[0].split(","),
        [dict(zip(lines[0].split(","), r.split(","))) for r in lines[1:]],
    )
    assert header[:5] == ["layer", "module", "attention", "head", "mean_distance"]
    assert [(r["layer"], r["head"]) for r in rows] == [
        ("0", "0"),
        ("0", "1"),
        ("1", "0"),
        ("1", "1"),
    ]
    for r in rows:
        assert 0.0 < float(r["mean_distance"]) < 30.0
        assert 0.0 < float(r["entropy"]) < math.log(64)
        assert int(r["queries"]) > 32  # more than one batch of sentences' tokens
    assert (tmp_path / "head_distance.png").is_file() and (tmp_path / "head_distance.svg").is_file()


def test_distance_and_entropy_by_hand():
    # one head: query 0 attends key 1 only; queries 1, 2 attend all three keys uniformly
    w = torch.tensor([[[[0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]]]])
    positions = torch.tensor([[[0.0], [1.0], [2.0]]])
    dist, ent, n = distance_and_entropy(w, positions)
    assert n == 3
    assert float(dist[0]) / 3 == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert float(ent[0]) / 3 == pytest.approx(2 * math.log(3) / 3)
    # padding: the last token is no query
    dist, _, n = distance_and_entropy(w, positions, torch.tensor([[True, True, False]]))
    assert n == 2 and float(dist[0]) / 2 == pytest.approx((1 + 2 / 3) / 2)


def test_truncated_mean_distance_stays_within_its_window():
    torch.manual_seed(0)
    x = torch.randn(3, 40, 16)
    positions = torch.arange(40.0)[None, :, None].expand(3, -1, -1)
    means = {}
    for name, params in (("truncated", {"window": 3}), ("dot", {})):
        attn = registry.build("attention", name, d_model=16, heads=2, **params).eval()
        _, weights = attn(x, x, x, need_weights=True)
        dist, _, n = distance_and_entropy(weights, positions)
        means[name] = dist / n
    assert bool((means["truncated"] <= 3).all()) and bool((means["truncated"] > 0.5).all())
    assert bool((means["dot"] > 5).all())  # unrestricted: about a third of the length


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 5, 5)  # two heads that attend only to themselves
    assert torch.equal(rollout([eye, eye, eye]), torch.eye(5))


def test_rollout_by_hand():
    uniform = torch.full((1, 2, 2), 0.5)
    # one layer: 0.5 * uniform + 0.5 * I = [[.75, .25], [.25, .75]]; two: its square
    assert torch.allclose(rollout([uniform]), torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    assert torch.allclose(
        rollout([uniform, uniform]), torch.tensor([[0.625, 0.375], [0.375, 0.625]])
    )


# ----------------------------------------------------------------------------- capture


def test_capture_records_every_layer_and_leaves_the_model_as_it_was(runs):
    from attnbench.analysis.loading import load_run

    loaded = load_run(runs["translation"])
    batch = next(iter(loaded.task.dataloader("test")))
    with torch.no_grad():
        before = loaded.task.forward(loaded.net, batch, "train")["logits"]
        with capture(loaded.net) as seen:
            during = loaded.task.forward(loaded.net, batch, "train")["logits"]
        after = loaded.task.forward(loaded.net, batch, "train")["logits"]
    assert torch.allclose(before, during, atol=1e-5) and torch.equal(before, after)
    paths = [r.path for r in seen.records]
    assert sorted(paths) == sorted(seen.modules)  # one call each in a teacher-forced pass
    assert [r.path for r in seen.layers(cross=True)] == [
        "backbone.decoder_blocks.0.cross_attn",
        "backbone.decoder_blocks.1.cross_attn",
    ]
    b, s = batch["src"].shape
    t = batch["tgt"].size(1) - 1
    for r in seen.records:
        expected = (b, 2, t, s) if r.cross else (b, 2, r.weights.size(2), r.weights.size(2))
        assert tuple(r.weights.shape) == expected
    with torch.no_grad():
        loaded.task.forward(loaded.net, batch, "train")
    assert len(seen.records) == len(paths)  # the hooks are gone


def test_steps_of_a_bahdanau_decoder_join_into_one_alignment(runs):
    """Bahdanau's decoder calls its attention once per target step (one query each) even
    teacher-forced: joined along the query axis, the calls give target x source, row t
    being step t's call."""
    from attnbench.analysis.loading import load_run

    loaded = load_run(runs["bahdanau"])
    batch = next(iter(loaded.task.dataloader("test")))
    with torch.no_grad(), capture(loaded.net) as seen:
        loaded.task.forward(loaded.net, batch, "train")
    b, s = batch["src"].shape
    t = batch["tgt"].size(1) - 1  # the decoder reads all but the last target token
    steps = seen.records
    assert len(steps) == t and all(tuple(r.weights.shape) == (b, 2, 1, s) for r in steps)
    [joined] = seen.joined(cross=True)
    assert joined.path == "backbone.attn" and tuple(joined.weights.shape) == (b, 2, t, s)
    for step, record in enumerate(steps):
        assert torch.equal(joined.weights[:, :, step], record.weights[:, :, 0])
    # the steps' queries differ (each is the state the cell reached), so do their rows
    assert not torch.allclose(joined.weights[:, :, 0], joined.weights[:, :, -1])


def test_joining_leaves_a_module_called_once_as_it_is(runs):
    from attnbench.analysis.loading import load_run

    loaded = load_run(runs["translation"])
    batch = next(iter(loaded.task.dataloader("test")))
    with torch.no_grad(), capture(loaded.net) as seen:
        loaded.task.forward(loaded.net, batch, "train")
    first, joined = seen.layers(cross=True), seen.joined(cross=True)
    assert [r.path for r in joined] == [r.path for r in first] and len(first) == 2
    assert all(j is f for j, f in zip(joined, first))
