"""POS tagging: CoNLL-U reader, synthetic language, padding-aware metrics, end to end."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.conllu import read_conllu
from attnbench.data.text import DataError

GOOD = """# sent_id = 1
# text = I saw a saw.
1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_
2\tsaw\tsee\tVERB\tVBD\t_\t0\troot\t_\t_
3\ta\ta\tDET\tDT\t_\t4\tdet\t_\t_
4\tsaw\tsaw\tNOUN\tNN\t_\t2\tobj\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_

1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
2.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_
3\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
"""  # the second sentence ends without a blank line


def _line(i: int, form: str, upos: str) -> str:
    return f"{i}\t{form}\t{form}\t{upos}\t_\t_\t0\tdep\t_\t_\n"


def write_ud(folder: Path, n: int = 40) -> Path:
    """A tiny UD-like treebank under folder/pos/ (train gzipped, as in shared data)."""
    pos = folder / "pos"
    pos.mkdir(parents=True, exist_ok=True)
    sent = "".join(
        _line(i + 1, w, t)
        for i, (w, t) in enumerate(
            [("The", "DET"), ("dog", "NOUN"), ("barks", "VERB"), (".", "PUNCT")]
        )
    )
    text = "\n".join([sent] * n) + "\n"
    with gzip.open(pos / "en_ewt-ud-train.conllu.gz", "wt") as f:
        f.write(text)
    for split in ("dev", "test"):
        (pos / f"en_ewt-ud-{split}.conllu").write_text(text)
    return folder


def test_reader_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text(GOOD)
    assert read_conllu(path) == [
        (["I", "saw", "a", "saw", "."], ["PRON", "VERB", "DET", "NOUN", "PUNCT"]),
        (["do", "n't", "Go"], ["AUX", "PART", "VERB"]),
    ]
    gz = tmp_path / "a.conllu.gz"
    gz.write_bytes(gzip.compress(GOOD.encode()))
    assert read_conllu(gz) == read_conllu(path)


@pytest.mark.parametrize(
    "bad, line, words",
    [
        ("1\tI\tI\tPRON\n", 1, "expected 10"),
        (_line(1, "a", "DET") + _line(3, "b", "NOUN"), 2, "expected 2"),
        (_line(1, "a", "DET") + "x\tb\tb\tNOUN\t_\t_\t0\tdep\t_\t_\n", 2, "word id 'x'"),
        (_line(1, "a", "NN"), 1, "not a universal POS tag"),
    ],
)
def test_reader_malformed_lines_name_file_and_line(tmp_path, bad, line, words):
    path = tmp_path / "bad.conllu"
    path.write_text("# comment\n" + bad)
    with pytest.raises(DataError, match=rf"bad\.conllu:{line + 1}: .*{words}"):
        read_conllu(path)


@pytest.mark.parametrize("text, words", [("", "is empty"), ("# only\n\n", "no token lines")])
def test_reader_empty_file_is_a_clear_error(tmp_path, text, words):
    path = tmp_path / "empty.conllu"
    path.write_text(text)
    with pytest.raises(DataError, match=words):
        read_conllu(path)


def test_synthetic_tags_need_context():
    from attnbench.plugins.tasks.pos import synthetic_pos

    data = synthetic_pos(2000, 0)
    tags_of = defaultdict(Counter)
    for words, tags in data:
        for w, t in zip(words, tags):
            tags_of[w.lower()][t] += 1
    assert set(tags_of["saw"]) == {"NOUN", "VERB"}
    assert set(tags_of["light"]) == {"ADJ", "NOUN", "VERB"}
    # The best context-free tagger (each word's majority tag) is far from perfect...
    total = sum(sum(c.values()) for c in tags_of.values())
    majority = sum(max(c.values()) for c in tags_of.values())
    assert majority / total < 0.92
    # ...while a word's tag is a function of its neighbours' tags.
    seen = defaultdict(set)
    for words, tags in data:
        padded = ["<s>", *tags, "</s>"]
        for i, w in enumerate(words):
            seen[(padded[i], w.lower(), padded[i + 2])].add(tags[i])
    assert all(len(t) == 1 for t in seen.values())


def test_word_shape():
    from attnbench.plugins.tasks.pos import word_shape

    assert [word_shape(w) for w in ("Hello", "U.S.", "1,000", "e-mail", "NASA")] == [
        "Xx",
        "X.X.",
        "d,d",
        "x-x",
        "X",
    ]


def test_word_dropout_only_in_training():
    from attnbench.plugins.tasks.pos import TaggingEmbedder

    drop_p = torch.tensor([0.0, 0.0, 1.0, 0.0])  # word 2 is always dropped
    emb = TaggingEmbedder([4, 3], 8, drop_p)
    batch = {"tokens": torch.tensor([[2, 3, 0]]), "feats": torch.tensor([[[1], [2], [0]]])}
    emb.train()
    x_train, ctx = emb(batch)
    emb.eval()
    x_eval, _ = emb(batch)
    unk = {"tokens": torch.tensor([[1, 3, 0]]), "feats": batch["feats"]}
    x_unk, _ = emb(unk)
    assert torch.allclose(x_train, x_unk)  # word 2 became <unk>, the rest unchanged
    assert not torch.allclose(x_eval[0, 0], x_unk[0, 0])
    assert ctx.key_padding_mask.tolist() == [[True, True, False]]


def test_padding_is_not_scored(tmp_path):
    task = registry.build("task", "pos", data_dir=str(tmp_path))
    task.setup()
    batch = next(iter(task.dataloader("val")))
    real = batch["label"] != -100
    assert (~real).any() and torch.equal(real, batch["tokens"] != 0)
    logits = torch.randn(*batch["label"].shape, task.classes)
    logits[~real] = float("nan")  # would poison the metric if padding were counted
    preds, target = task.metric_inputs(logits, batch)
    assert len(preds) == len(target) == int(real.sum())
    assert (target >= 0).all()
    assert torch.isfinite(task.loss(logits.nan_to_num(), batch))


def test_fast_dev_run_synthetic_transformer(tmp_path):
    summary = fast_dev_run(["task=pos", "model=transformer", "model.d_model=32"], tmp_path)
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert "test/f1" in summary["metrics"]


def test_fast_dev_run_ud_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_ud(tmp_path / "data")
    summary = fast_dev_run(
        ["task=pos", "task.dataset=ud_ewt", f"data_dir={data}", "model.d_model=32"],
        tmp_path / "run",
    )
    assert "test/acc" in summary["metrics"]


def test_fast_dev_run_ud_ewt_shared(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    summary = fast_dev_run(
        ["task=pos", "task.dataset=ud_ewt", f"data_dir={shared_data}", "model.d_model=32"], tmp_path
    )
    assert "test/acc" in summary["metrics"]


def test_ud_sizes_and_tags(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    task = registry.build("task", "pos", data_dir=str(shared_data), dataset="ud_ewt")
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [12544, 2001, 2077]
    assert int(task.splits["test"].lengths.sum()) == 25094  # every word scored


def test_missing_data_says_where_and_how(tmp_path):
    task = registry.build("task", "pos", data_dir=str(tmp_path), dataset="ud_ewt")
    with pytest.raises(DataError, match=r"pos/en_ewt-ud-train\.conllu.*attnbench download ud_ewt"):
        task.setup()


def test_bad_dataset_name():
    with pytest.raises(registry.ConfigError, match="ud_ewt"):
        registry.build("task", "pos", data_dir=".", dataset="ptb")


def test_char_cnn_tells_unseen_words_apart_by_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_ud(tmp_path / "data")
    # two test-only words: same <unk> word id, shape and (rare -> <unk>) suffixes
    test = "".join(
        _line(i + 1, w, t)
        for i, (w, t) in enumerate([("The", "DET"), ("bogs", "NOUN"), ("zebs", "VERB")])
    )
    (data / "pos" / "en_ewt-ud-test.conllu").write_text(test + "\n")
    task = registry.build(
        "task", "pos", data_dir=str(data), dataset="ud_ewt", char_dim=8, char_filters=16
    )
    task.setup()
    feats, _ = task.splits["test"][0]  # (3, F): word, shape, suffixes, form id
    itos, table = task.chars["itos"], task.chars["table"]
    spelled = ["".join(itos[c] for c in table[f] if c) for f in feats[:, -1].tolist()]
    assert spelled == ["The", "bogs", "<unk>ebs"]  # 'z' never occurs in training
    assert feats[1, :-1].tolist() == feats[2, :-1].tolist()  # identical but for the form
    emb = task.build_embedder(16).eval()
    x, _ = emb(collate_tagged_one(feats))
    assert not torch.allclose(x[0, 1], x[0, 2])  # the char CNN tells them apart
    emb.chars = None
    x, _ = emb(collate_tagged_one(feats))
    assert torch.allclose(x[0, 1], x[0, 2])


def collate_tagged_one(feats: torch.Tensor) -> dict[str, torch.Tensor]:
    from attnbench.plugins.tasks.pos import collate_tagged

    return collate_tagged([(feats, torch.zeros(len(feats), dtype=torch.long))])
