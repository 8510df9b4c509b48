"""Translation task: parallel data, encoder-decoder backbones, incremental decoding,
BLEU / exact match, predictions file, and every attention plugin in the encoder-decoder."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest
import torch
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.parallel import collate_parallel, detokenize, read_parallel, tokenize
from attnbench.data.text import DataError
from attnbench.nn.ctx import Ctx
from attnbench.nn.decoding import beam_search, greedy_search
from attnbench.registry import ConfigError
from attnbench.task import Network

# ----------------------------------------------------------------------------- helpers


def build_lit(
    model: str = "transformer",
    attention: str = "dot",
    posenc: str = "sinusoidal",
    task_params: dict | None = None,
    seed: int = 0,
    **model_params,
):
    """(task, LitModel) as the harness builds them, tiny and in eval mode."""
    from attnbench.builders import build_backbone
    from attnbench.lit import LitModel

    torch.manual_seed(seed)
    task = registry.build("task", "translation", data_dir=".", **(task_params or {}))
    task.setup()
    model_params = {"d_model": 32, "dropout": 0.0, **model_params}
    if model == "transformer":
        model_params.setdefault("heads", 2)
    plugins = {
        "model": (model, model_params),
        "attention": (attention, {}),
        "posenc": (posenc, {}),
        "task": ("translation", {}),
    }
    lit = LitModel(
        task,
        build_backbone(plugins, task),
        {"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "scheduler": "none"},
    )
    return task, lit.eval()


def build(*args, **kwargs):
    """(task, the Network the task runs: embedder, backbone, head), tiny and in eval mode."""
    task, lit = build_lit(*args, **kwargs)
    return task, lit.net


def batch_of(task, n: int = 5, split: str = "val") -> dict:
    loader = torch.utils.data.DataLoader(
        task.splits[split], batch_size=n, collate_fn=collate_parallel
    )
    return next(iter(loader))


def write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))


DE = [
    "Ein Mann schläft.",
    "Zwei Hunde spielen im Schnee.",
    "Ein Mann, ein Hund.",
    "Eine Frau liest ein Buch.",
]
EN = ["A man sleeps.", "Two dogs play in the snow.", "A man, a dog.", "A woman reads a book."]


@pytest.fixture
def multi30k(tmp_path, monkeypatch) -> Path:
    """A tiny Multi30k-shaped data directory (gzip files), cache in tmp_path."""
    folder = tmp_path / "data" / "translation"
    folder.mkdir(parents=True)
    for stem in ("train", "val", "test_2016_flickr"):
        write_gz(folder / f"{stem}.de.gz", DE)
        write_gz(folder / f"{stem}.en.gz", EN)
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "data"


# ----------------------------------------------------------------------------- data


def test_tokenize_and_detokenize_round_trip():
    text = "A man (in a T-shirt) isn't sleeping, he's reading: 3 books!"
    tokens = tokenize(text)
    assert tokens[:6] == ["A", "man", "(", "in", "a", "T-shirt"]
    assert "isn't" in tokens and "," in tokens and tokens[-1] == "!"
    assert detokenize(tokens) == text
    assert tokenize("Ein Mann", lowercase=True) == ["ein", "mann"]


def test_read_parallel_accepts_gz_and_plain(tmp_path):
    write_gz(tmp_path / "a.de.gz", DE)
    (tmp_path / "a.en").write_text("\n".join(EN) + "\n", encoding="utf-8")
    src, tgt = read_parallel(tmp_path / "a.de.gz", tmp_path / "a.en")
    assert src == DE and tgt == EN


def test_misaligned_or_empty_lines_name_the_file(tmp_path):
    write_gz(tmp_path / "a.de.gz", DE)
    write_gz(tmp_path / "a.en.gz", EN[:3])
    with pytest.raises(DataError, match=r"a\.de\.gz has 4 lines but .*a\.en\.gz has 3"):
        read_parallel(tmp_path / "a.de.gz", tmp_path / "a.en.gz")
    write_gz(tmp_path / "b.en.gz", [EN[0], "", *EN[2:]])
    with pytest.raises(DataError, match=r"b\.en\.gz:2: empty line"):
        read_parallel(tmp_path / "a.de.gz", tmp_path / "b.en.gz")


def test_multi30k_reads_both_directions_and_caches(multi30k):
    task = registry.build(
        "task",
        "translation",
        data_dir=str(multi30k),
        dataset="multi30k",
        min_freq=1,
        lowercase=False,
    )
    task.setup()
    assert not task.from_cache and len(task.splits["train"]) == 4
    assert "Hunde" in task.src_itos and "dogs" in task.tgt_itos and "dogs" not in task.src_itos
    assert task.splits["test"].refs == EN  # references are the raw target lines
    again = registry.build(
        "task",
        "translation",
        data_dir=str(multi30k),
        dataset="multi30k",
        min_freq=1,
        lowercase=False,
    )
    again.setup()
    assert again.from_cache and again.cache_path == task.cache_path
    assert again.tgt_itos == task.tgt_itos
    back = registry.build(
        "task",
        "translation",
        data_dir=str(multi30k),
        dataset="multi30k",
        min_freq=1,
        source="en",
        target="de",
        shared_vocab=True,
    )
    back.setup()
    assert back.cache_path != task.cache_path
    assert back.splits["val"].refs == DE
    assert back.src_itos is back.tgt_itos or back.src_itos == back.tgt_itos
    assert {"hunde", "dogs"} <= set(back.src_itos)


def test_missing_files_and_bad_settings_are_one_line_errors(tmp_path):
    task = registry.build("task", "translation", data_dir=str(tmp_path), dataset="multi30k")
    with pytest.raises(DataError, match=r"missing data file .*translation/train\.de"):
        task.setup()
    with pytest.raises(ConfigError, match="task.source and task.target are both 'en'"):
        registry.build("task", "translation", data_dir=".", source="en", target="en")
    with pytest.raises(ConfigError, match="task.dataset='wmt' is not one of"):
        registry.build("task", "translation", data_dir=".", dataset="wmt")


def test_shared_vocabulary_shares_one_embedding_and_ties_the_head():
    task, net = build(task_params={"shared_vocab": True})
    assert net.embedder.src is net.embedder.tgt
    assert net.head.proj.weight is net.embedder.tgt.embed.weight
    task, net = build(task_params={"tie_embeddings": False})
    assert net.embedder.src is not net.embedder.tgt
    assert net.head.proj.weight is not net.embedder.tgt.embed.weight


# ----------------------------------------------------------------------------- decoding


def full_redecode_step(task, net, memory, src_ctx):
    """A step function that re-runs the decoder over the whole prefix every step."""

    def step(tokens, prefix):
        prefix = tokens[:, None] if prefix is None else torch.cat([prefix, tokens[:, None]], 1)
        h, _ = net.backbone.decode(net.embedder.target(prefix), memory, src_ctx)
        return net.head(h, Ctx())[:, -1].float().log_softmax(-1), prefix

    return step


CASES = [
    ("transformer", "dot", "sinusoidal", {}),
    ("transformer", "dot", "rope", {}),
    ("transformer", "multihead", "alibi", {}),
    ("transformer", "additive", "relative", {}),
    ("transformer", "linear", "learned", {"norm": "post"}),
    ("rnn", "additive", "none", {}),
    ("rnn", "dot", "none", {"cell": "gru"}),
    ("rnn", "dot", "none", {"use_attention": False}),
]


@pytest.mark.parametrize(
    ("model", "attention", "posenc", "params"),
    CASES,
    ids=lambda c: str(c) if not isinstance(c, dict) else "",
)
def test_incremental_decoding_matches_full_redecoding(model, attention, posenc, params):
    task, net = build(model, attention, posenc, **params)
    batch = batch_of(task)
    with torch.no_grad():
        x, src_ctx = net.embedder.source(batch["src"])
        memory = net.backbone.encode(x, src_ctx)
        # hidden states: teacher forcing in one pass == one token at a time with the cache
        y = net.embedder.target(batch["tgt"])
        full, _ = net.backbone.decode(y, memory, src_ctx)
        cache, rows = None, []
        for t in range(y.size(1)):
            h, cache = net.backbone.decode(y[:, t : t + 1], memory, src_ctx, cache)
            rows.append(h)
        torch.testing.assert_close(torch.cat(rows, 1), full, atol=1e-5, rtol=1e-4)
        # tokens: the task's (incremental) greedy search == greedy over full re-decoding
        fast = task.generate(net, memory, src_ctx)
        slow = greedy_search(
            full_redecode_step(task, net, memory, src_ctx),
            memory.size(0),
            bos=2,
            eos=3,
            pad=0,
            max_len=fast.size(1),
        )
    assert torch.equal(fast, slow[:, : fast.size(1)])


@pytest.mark.parametrize("attention", ["dot", "multihead", "additive"])
def test_transformer_decoder_caches_projected_keys_and_values(attention):
    """Cross-attention keys/values are projected once per sentence; self-attention's grow by
    one position per step (not re-projected from the prefix)."""
    task, net = build("transformer", attention)
    batch = batch_of(task, 4)
    with torch.no_grad():
        x, src_ctx = net.embedder.source(batch["src"])
        memory = net.backbone.encode(x, src_ctx)
        y = net.embedder.target(batch["tgt"][:, :3])
        _, cache = net.backbone.decode(y[:, :1], memory, src_ctx)
        cross_k = [layer["cross"]["k"] for layer in cache["layers"]]
        for t in (1, 2):
            _, cache = net.backbone.decode(y[:, t : t + 1], memory, src_ctx, cache)
    for layer, k in zip(cache["layers"], cross_k):
        assert layer["cross"]["k"] is k and k.size(-2) == memory.size(1)
        assert layer["self"]["k"].size(-2) == 3 and "inputs" not in layer


def assert_cached_beam_equals_full_redecoding(task, net) -> None:
    """Beam 3 through the task (cached state, reordered per step) == the same beam search
    re-running the decoder over every beam's whole prefix, on 6 sentences."""
    batch = batch_of(task, 6)
    with torch.no_grad():
        x, src_ctx = net.embedder.source(batch["src"])
        memory = net.backbone.encode(x, src_ctx)
        fast = task.generate(net, memory, src_ctx)
        mask = src_ctx.key_padding_mask
        beams_ctx = src_ctx.replace(
            key_padding_mask=None if mask is None else mask.repeat_interleave(3, 0)
        )
        step = full_redecode_step(task, net, memory.repeat_interleave(3, 0), beams_ctx)
        slow = beam_search(
            step,
            6,
            bos=2,
            eos=3,
            pad=0,
            max_len=fast.size(1),
            beam_size=3,
            alpha=task.length_penalty,
        )
    assert torch.equal(fast, slow[:, : fast.size(1)])


@pytest.mark.parametrize(
    ("model", "attention"), [("transformer", "dot"), ("transformer", "linear"), ("rnn", "additive")]
)
def test_cached_beam_search_equals_beam_search_over_full_redecoding(model, attention):
    """Beam 3 through the task (cached state, reordered per step) == the same beam search
    re-running the decoder over every beam's whole prefix."""
    task, net = build(model, attention)
    task.beam_size = 3
    assert_cached_beam_equals_full_redecoding(task, net)


@pytest.mark.parametrize("model", ["transformer", "rnn"])
def test_beam_size_one_equals_greedy_on_the_model(model):
    task, net = build(model)
    batch = batch_of(task, 8)
    with torch.no_grad():
        x, src_ctx = net.embedder.source(batch["src"])
        memory = net.backbone.encode(x, src_ctx)
        greedy = task.generate(net, memory, src_ctx)
        step = full_redecode_step(task, net, memory, src_ctx)
        beam1 = beam_search(
            step, 8, bos=2, eos=3, pad=0, max_len=greedy.size(1), beam_size=1, alpha=0.6
        )
        task.beam_size = 3
        beam3 = task.generate(net, memory, src_ctx)
    assert torch.equal(beam1, greedy)
    assert beam3.shape[0] == 8 and beam3.dtype == torch.long


# ----------------------------------------------------------------------------- metrics


def test_bleu_matches_sacrebleu_and_hand_computed_values():
    task = registry.build("task", "translation", data_dir=".", lowercase=False)
    bleu = task.metrics()["bleu"]
    hyps = [
        "A man in a blue shirt is standing on a ladder.",
        "Two dogs play in the snow!",
        "the cat is on the mat",
    ]
    refs = [
        "A man in a blue shirt is standing on a ladder cleaning windows.",
        "Two dogs are playing in the snow.",
        "there is a cat on the mat",
    ]
    bleu.update(hyps, [[r] for r in refs])
    # sacrebleu 2.6.0: sacrebleu.corpus_bleu(hyps, [refs]).score
    assert bleu.compute().item() == pytest.approx(55.01143, abs=1e-3)
    try:
        import sacrebleu
    except ImportError:
        pass
    else:
        assert bleu.compute().item() == pytest.approx(
            sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-3
        )
    # by hand: p1..p4 = 5/6, 4/5, 3/4, 2/3 against the second reference, no brevity penalty
    hand = task.metrics()["bleu"]
    hand.update(["the cat is on the mat"], [["there is a cat on the mat", "a cat is on the mat"]])
    assert hand.compute().item() == pytest.approx(100 * (1 / 3) ** 0.25, abs=1e-3)
    lower = registry.build("task", "translation", data_dir=".").metrics()["bleu"]
    lower.update(["The Cat sat."], [["the cat sat."]])
    assert lower.compute().item() == pytest.approx(100.0)


def test_exact_match_compares_token_sequences():
    task = registry.build("task", "translation", data_dir=".")
    em = task.metrics()["exact"]
    em.update(
        ["A man sleeps .", "two dogs", "a cat"], [["a man sleeps."], ["two dogs!"], ["a cat"]]
    )
    assert em.compute().item() == pytest.approx(2 / 3)


def test_metric_collection_takes_strings():
    from torchmetrics import MetricCollection

    task = registry.build("task", "translation", data_dir=".")
    metrics = MetricCollection(task.metrics()).clone(prefix="val/")
    metrics.update(["a b c d", "x y"], [["a b c d"], ["x z"]])
    out = metrics.compute()
    assert out["val/exact"].item() == pytest.approx(0.5)
    assert 0 < out["val/bleu"].item() < 100


# ----------------------------------------------------------------------------- end to end


def cross_capable(name: str) -> bool:
    cls = registry.get("attention", name).cls
    return cls.supports_cross and cls.supports_causal and not cls.needs_graph


@pytest.mark.parametrize("attention", registry.available("attention"))
def test_every_attention_plugin_in_the_encoder_decoder(attention, tmp_path):
    overrides = [
        "task=translation",
        "model=transformer",
        f"attention={attention}",
        "model.d_model=16",
        "model.heads=2",
    ]
    if not cross_capable(attention):
        with pytest.raises(ConfigError, match=f"attention '{attention}'"):
            fast_dev_run(overrides, tmp_path)
        return
    summary = fast_dev_run(overrides, tmp_path)
    assert torch.isfinite(torch.tensor(summary["metrics"]["test/loss"]))
    assert {"test/bleu", "test/exact", "val/bleu"} <= set(summary["metrics"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["attention=additive"],
        ["model.use_attention=false"],
        ["attention=dot", "model.cell=gru", "task.beam_size=3"],
    ],
    ids=" ".join,
)
def test_rnn_encoder_decoder_runs(overrides, tmp_path):
    summary = fast_dev_run(
        ["task=translation", "model=rnn", "model.d_model=16", *overrides], tmp_path
    )
    assert torch.isfinite(torch.tensor(summary["metrics"]["test/loss"]))
    lines = Path(summary["predictions"]["test"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 64  # fast_dev_run predicts one batch of task.batch_size


def test_rnn_without_attention_has_no_attention_weights():
    _, with_attn = build("rnn", "additive")
    _, without = build("rnn", "additive", use_attention=False)
    assert with_attn.backbone.attn is not None and without.backbone.attn is None
    n = sum(p.numel() for p in without.parameters())
    assert n < sum(p.numel() for p in with_attn.parameters())


def test_encoder_only_backbone_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model 'mlp' does not declare supports_seq2seq"):
        fast_dev_run(["task=translation", "model=mlp", "model.d_model=16"], tmp_path)


def test_translations_file_holds_the_test_predictions(tmp_path):
    summary = fast_dev_run(["task=translation", "model.d_model=16", "task.batch_size=8"], tmp_path)
    path = Path(summary["predictions"]["test"])
    assert path.name == "translations_test.txt" and path.parent == tmp_path
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8
    vocab = {
        "aa",
        "bb",
        "cc",
        "dd",
        "ee",
        "ff",
        "gg",
        "hh",
        "ii",
        "jj",
        "kk",
        "ll",
        "mm",
        "nn",
        "oo",
        "pp",
        "<unk>",
    }
    assert all(set(line.split()) <= vocab for line in lines)


@pytest.mark.slow
def test_synthetic_translation_is_learned(tmp_path):
    """A small transformer learns the built-in transduction to >= 90% exact match (~1 min)."""
    from attnbench.config import compose
    from attnbench.train import run

    cfg = compose(
        [
            "task=translation",
            "model.d_model=64",
            "trainer.max_epochs=8",
            "trainer.accelerator=cpu",
            "logger=none",
        ],
        tmp_path,
    )
    summary = run(cfg)
    assert summary["metrics"]["test/exact"] >= 0.9
    assert summary["metrics"]["test/bleu"] >= 90


def test_multi30k_shared_data_reads(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    task = registry.build("task", "translation", data_dir=str(shared_data), dataset="multi30k")
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [29000, 1014, 1000]
    assert 5000 < len(task.src_itos) < 10000 and 4000 < len(task.tgt_itos) < 8000


def test_harness_tells_forward_the_stage_validation_decodes_greedy_and_test_with_the_beam(
    tmp_path, monkeypatch
):
    """Greedy validation each epoch (cheap), the configured beam for the test scores and the
    saved translations; training batches generate nothing."""
    translation = type(registry.build("task", "translation", data_dir="."))
    module = sys.modules[translation.__module__]
    events = []  # ("forward", stage) / ("greedy", beam) / ("beam", beam), in call order
    real_forward = translation.forward
    real_greedy, real_beam = module.greedy_search, module.beam_search

    def forward(self, net, batch, stage):
        assert type(net) is Network  # the plain network: no LightningModule, no trainer
        events.append(("forward", stage))
        return real_forward(self, net, batch, stage)

    def greedy_search(*args, **kwargs):
        events.append(("greedy", 1))
        return real_greedy(*args, **kwargs)

    def beam_search(*args, **kwargs):
        events.append(("beam", kwargs["beam_size"]))
        return real_beam(*args, **kwargs)

    monkeypatch.setattr(translation, "forward", forward)
    monkeypatch.setattr(module, "greedy_search", greedy_search)
    monkeypatch.setattr(module, "beam_search", beam_search)
    fast_dev_run(
        [
            "task=translation",
            "model=rnn",
            "model.d_model=16",
            "task.beam_size=3",
            "task.val_beam_size=1",
        ],
        tmp_path,
    )
    decoded, stage = set(), None
    for kind, value in events:
        if kind == "forward":
            stage = value
        else:
            decoded.add((stage, kind, value))
    stages = {value for kind, value in events if kind == "forward"}
    assert stages == {"train", "val", "test", "predict"}
    assert decoded == {("val", "greedy", 1), ("test", "beam", 3), ("predict", "beam", 3)}


def test_checkpoint_from_before_the_network_container_loads():
    """Checkpoints written when LitModel held embedder/backbone/head directly still resume."""
    _, saved = build_lit(seed=1)
    _, fresh = build_lit(seed=2)
    old_keys = {key.removeprefix("net."): value for key, value in saved.state_dict().items()}
    assert "embedder.src.embed.weight" in old_keys  # the layout before LitModel.net
    assert not torch.equal(saved.net.head.proj.weight, fresh.net.head.proj.weight)
    checkpoint = {"state_dict": old_keys}
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every key must match
    for (name, a), b in zip(saved.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- bahdanau placement


BAHDANAU = [("additive", {"cell": "lstm"}), ("additive", {"cell": "gru"}), ("dot", {"cell": "gru"})]


@pytest.mark.parametrize(("attention", "params"), BAHDANAU, ids=str)
def test_bahdanau_step_wise_decoding_equals_teacher_forcing(attention, params):
    """The teacher-forced loop and one token at a time with the cache give the same hidden
    states and tokens, on a batch whose sources are padded."""
    task, net = build("rnn", attention, attention_placement="bahdanau", **params)
    src_mask = net.embedder.source(batch_of(task)["src"])[1].key_padding_mask
    assert src_mask is not None and not bool(src_mask.all())  # some sources are padded
    test_incremental_decoding_matches_full_redecoding(
        "rnn", attention, "none", {"attention_placement": "bahdanau", **params}
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bahdanau_query_is_the_previous_top_layer_state(cell):
    """d2l 10.4: step t attends with the decoder's top-layer h after step t-1 (the initial
    state at t=0), and the cell reads [embedding; context], 2 * d_model wide."""
    task, net = build("rnn", "additive", attention_placement="bahdanau", cell=cell, layers=2)
    backbone = net.backbone
    assert backbone.decoder.input_size == 2 * backbone.d_model
    batch = batch_of(task)
    queries = []
    hook = backbone.attn.register_forward_pre_hook(lambda m, args: queries.append(args[0]))
    with torch.no_grad():
        x, src_ctx = net.embedder.source(batch["src"])
        memory = backbone.encode(x, src_ctx)
        y = net.embedder.target(batch["tgt"][:, :4])
        states = [backbone._initial_state(memory, src_ctx)]  # (B, states, layers, d)
        cache = None
        for t in range(4):
            _, cache = backbone.decode(y[:, t : t + 1], memory, src_ctx, cache)
            states.append(cache["state"])
    hook.remove()
    assert len(queries) == 4
    for t, query in enumerate(queries):
        torch.testing.assert_close(query[:, 0], states[t][:, 0, -1])  # h, top layer
    assert not torch.allclose(states[1][:, 0, -1], states[0][:, 0, -1])  # it moved


@pytest.mark.parametrize(("attention", "params"), BAHDANAU[:2], ids=str)
def test_bahdanau_cached_beam_search_equals_beam_over_full_redecoding(attention, params):
    task, net = build("rnn", attention, attention_placement="bahdanau", **params)
    task.beam_size = 3
    assert_cached_beam_equals_full_redecoding(task, net)


def test_placements_differ_and_luong_is_the_default():
    _, luong = build("rnn", "additive")
    _, bahdanau = build("rnn", "additive", attention_placement="bahdanau")
    assert luong.backbone.placement == "luong" and hasattr(luong.backbone, "combine")
    assert not hasattr(bahdanau.backbone, "combine")  # d2l: the output layer reads the cell
    assert luong.backbone.decoder.input_size == luong.backbone.d_model


def test_bahdanau_encoder_decoder_runs(tmp_path):
    summary = fast_dev_run(
        [
            "task=translation",
            "model=rnn",
            "model.attention_placement=bahdanau",
            "attention=additive",
            "model.d_model=16",
        ],
        tmp_path,
    )
    assert torch.isfinite(torch.tensor(summary["metrics"]["test/loss"]))
    assert {"test/bleu", "val/bleu"} <= set(summary["metrics"])
    lines = Path(summary["predictions"]["test"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 64


@pytest.mark.parametrize(
    "params",
    [{}, {"attention": "additive"}, {"attention": "additive", "cell": "gru"}],
    ids=str,
)
def test_bahdanau_placement_conforms(params):
    from attnbench.testing import assert_conforms

    checks = assert_conforms("model", "rnn", attention_placement="bahdanau", **params)
    seq2seq = [c for c in checks if c.name == "seq2seq"]
    assert seq2seq and seq2seq[0].status == "pass"


def test_bad_attention_placement_is_refused_before_training(tmp_path):
    with pytest.raises(registry.AttnbenchError, match="model.attention_placement='bahdanu'") as e:
        fast_dev_run(
            ["task=translation", "model=rnn", "model.attention_placement=bahdanu"], tmp_path
        )
    assert "\n" not in str(e.value) and "'luong', 'bahdanau'" in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_bahdanau_without_attention_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="attention_placement=bahdanau") as e:
        fast_dev_run(
            [
                "task=translation",
                "model=rnn",
                "model.attention_placement=bahdanau",
                "model.use_attention=false",
            ],
            tmp_path,
        )
    assert "\n" not in str(e.value)
