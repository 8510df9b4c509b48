"""Pick a run's examples and turn one captured forward pass into maps, per kind of task.

Kinds follow from what the task declares: ``seq2seq`` -> translation (the decoder's
cross-attention, source x generated target), ``gives_edges`` -> graph (each chosen node's
neighbourhood), ``grid`` -> image (patches), anything else -> tokens (self-attention).

What a map needs beyond the weights is read from the task by duck typing, never by plugin
name: ``task.vocab`` (a :class:`attnbench.data.text.Vocab`) for token text and ``--text``,
``task.encode_text(text) -> batch`` when a task offers it; ``src_itos`` / ``tgt_itos``, the
batch's ``src`` / ``tgt`` and the ``generated`` output of a sequence-to-sequence task; the
batch's ``image`` for overlays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from attnbench.analysis.capture import Capture, Record, capture
from attnbench.analysis.stats import rollout
from attnbench.data.parallel import BOS, EOS, tokenize
from attnbench.registry import ConfigError
from attnbench.task import Network, Task

# maps.json's "kind" of map: token × token, target × source, patches on an image, a node's
# neighbourhood (kinds of picture, not task names)
KINDS = ("tokens", "alignment", "patches", "nodes")
TOKENS, TRANSLATION, IMAGE, GRAPH = KINDS
SPLITS = ("train", "val", "test")
PAD = 0  # the padding id of token batches (attnbench.data.text.Vocab)
GRAPH_NEIGHBOURS = 24  # a hub's neighbourhood is cut to its most attended nodes


def kind_of(task: Task) -> str:
    if getattr(task, "seq2seq", False):
        return TRANSLATION
    if getattr(task, "gives_edges", False):
        return GRAPH
    if getattr(task, "grid", False):
        return IMAGE
    return TOKENS


@dataclass
class Example:
    """The maps of one example. ``layers[l]`` is (heads, Nq, Nk): self-attention over
    ``tokens`` (tokens, image), cross-attention of generated ``target`` over ``source``
    (translation), the neighbourhood ``tokens`` x ``tokens`` (graph)."""

    index: int | None  # in the split; None for --text
    layers: list[Tensor]
    tokens: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    target: list[str] = field(default_factory=list)
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # image: pooled, rollout, pixels...


# ----------------------------------------------------------------------------- batches


def select_rows(batch: Any, rows: list[int], size: int) -> Any:
    """The given rows of a collated batch of ``size`` examples, as a batch of len(rows)."""
    if isinstance(batch, Tensor):
        return batch[rows] if batch.dim() and batch.size(0) == size else batch
    if isinstance(batch, dict):
        return {k: select_rows(v, rows, size) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and len(batch) == size:
        return type(batch)(batch[r] for r in rows)
    return batch


def examples_at(
    task: Task, split: str, indices: list[int], option: str = "--index "
) -> Iterator[tuple[list[int], Any]]:
    """(indices, batch of just those examples) per loader batch holding wanted indices, in
    the split's order (evaluation loaders do not shuffle): one forward pass serves them.
    ``option`` names the setting an index past the split came from, in the error."""
    wanted, offset, last = set(indices), 0, -1
    for batch in task.dataloader(split):
        size = task.num_samples(batch)
        mine = sorted(j for j in wanted if offset <= j < offset + size)
        if mine:
            yield mine, select_rows(batch, [j - offset for j in mine], size)
            wanted -= set(mine)
        offset, last = offset + size, offset + size - 1
        if not wanted:
            return
    raise ConfigError(
        f"{option}{min(wanted)}: the {split} split has only {last + 1} examples (indices 0..{last})"
    )


def check_split(task: Task, split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is not one of {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------- text


def _words(task: Task, text: str) -> list[str]:
    return (text.lower() if getattr(task, "lowercase", False) else text).split()


def encode_text(task: Task, text: str) -> Any:
    """A batch of one sentence in the task's vocabulary; unknown words get the unk id."""
    if hasattr(task, "encode_text"):
        return task.encode_text(text)
    name = getattr(task, "plugin_name", type(task).__name__)
    if kind_of(task) == TRANSLATION:
        stoi = {t: i for i, t in enumerate(task.src_itos)}
        ids = [stoi.get(t, 1) for t in tokenize(text, getattr(task, "lowercase", False))]
        if not ids:
            raise ConfigError("--text is empty; give a sentence to translate")
        bos, eos = task.tgt_itos.index(BOS), task.tgt_itos.index(EOS)
        return {"src": torch.tensor([ids]), "tgt": torch.tensor([[bos, eos]]), "refs": [""]}
    vocab = getattr(task, "vocab", None)
    if kind_of(task) != TOKENS or vocab is None:
        raise ConfigError(
            f"task {name!r} cannot read --text: it has no vocabulary (task.vocab) and no "
            "encode_text(text); pick examples of a split with --index"
        )
    words = _words(task, text)
    if not words:
        raise ConfigError("--text is empty; give a sentence, e.g. --text 'I saw a saw'")
    return {"tokens": vocab.encode(words)[None], "label": torch.zeros(1, dtype=torch.long)}


def _token_text(task: Task, batch: Any, row: int, real: Tensor) -> list[str]:
    """A row's real tokens as text, from task.vocab; positions when there is none."""
    vocab = getattr(task, "vocab", None)
    tokens = batch.get("tokens") if isinstance(batch, dict) else None
    if vocab is not None and isinstance(tokens, Tensor) and tokens.dim() == 2:
        return [vocab.itos[i] for i in tokens[row][real].tolist()]
    return [str(i) for i in range(int(real.sum()))]


# ----------------------------------------------------------------------------- forward


def to_device(batch: Any, device: torch.device) -> Any:
    """A collated batch with its tensors on ``device`` (other fields as they are)."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def device_of(net: torch.nn.Module) -> torch.device:
    """Where the net's weights are (the CPU for a net without any)."""
    first = next(net.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _forward(task: Task, net: Network, batch: Any, stage: str) -> Any:
    """The task's forward pass on the net's device (a model training on a GPU, drawn by
    the training callback); the caller's batch stays where it is, for the text."""
    with torch.no_grad():
        return task.forward(net, to_device(batch, device_of(net)), stage)


def _run(task: Task, net: Network, batch: Any, stage: str) -> tuple[Capture, Any]:
    with capture(net) as seen:
        out = _forward(task, net, batch, stage)
    return seen, out


def _require(layers: list[Record], what: str) -> list[Record]:
    if not layers:
        raise ConfigError(f"no {what} weights were captured in this model's forward pass")
    return layers


def _real_keys(record: Record, row: int) -> Tensor:
    """(Nk,) True for a row's real (non-padding) keys."""
    mask = getattr(record.ctx, "key_padding_mask", None)
    if mask is None:
        return torch.ones(record.weights.size(-1), dtype=torch.bool)
    return mask[row].cpu().bool()


def token_examples(task: Task, net: Network, indices: list, batch: Any) -> list[Example]:
    """Self-attention over each example's real tokens (padding cut off), every layer."""
    seen, _ = _run(task, net, batch, "test")
    layers = _require(seen.layers(cross=False), "self-attention")
    out = []
    for row, index in enumerate(indices):
        real = _real_keys(layers[0], row)
        maps = [r.weights[row][:, real][:, :, real] for r in layers]  # (h, N, N)
        out.append(Example(index, maps, tokens=_token_text(task, batch, row, real)))
    return out


def translation_examples(task: Task, net: Network, indices: list, batch: Any) -> list[Example]:
    """The cross-attention of the decoder over the source while it reads its own output:
    generate (as the run's test did: task.beam_size), then one teacher-forced pass on the
    generated tokens gives every decoder layer's (target x source) weights at once, those
    of the generation itself (the decoder is causal and dropout is off)."""
    generated = _forward(task, net, batch, "predict")["generated"].tolist()  # (B, L)
    bos, eos = task.tgt_itos.index(BOS), task.tgt_itos.index(EOS)
    targets = []
    for row in generated:
        row = [t for t in row if t != PAD]
        targets.append(row[: row.index(eos) + 1] if eos in row else row)
    forced = pad_sequence(
        [torch.tensor([bos, *t]) for t in targets], batch_first=True, padding_value=PAD
    )  # (B, 1 + T): <s> and the output; the pass reads all but the last
    seen, _ = _run(task, net, {**batch, "tgt": forced}, "train")  # "train": no decoding loop
    # a decoder attending once per target step (rnn, bahdanau) calls it T times: joined
    layers = _require(seen.joined(cross=True), "cross-attention")
    out = []
    for row, (index, target) in enumerate(zip(indices, targets)):
        real = _real_keys(layers[0], row)
        maps = [r.weights[row][:, : len(target), real] for r in layers]  # (h, T, S)
        source = [task.src_itos[i] for i in batch["src"][row][real].tolist()]
        target_text = [task.tgt_itos[i] for i in target]
        out.append(Example(index, maps, source=source, target=target_text))
    return out


def _patch_grid(values: Tensor, positions: Tensor, located: Tensor) -> Tensor:
    """Values (..., N) of located tokens -> (..., rows, cols) on the patch grid."""
    pos = positions[located].long()  # (P, 2)
    rows, cols = int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1
    grid = values.new_zeros(*values.shape[:-1], rows, cols)
    grid[..., pos[:, 0], pos[:, 1]] = values[..., located]
    return grid


def _pooled_row(weights: Tensor, located: Tensor) -> tuple[Tensor, str]:
    """(..., N, N) -> the pooled query's row (..., N): a CLS token's (a token without a
    place on the grid), else the mean over the patches' rows (mean pooling)."""
    cls = (~located).nonzero().flatten()
    if len(cls):
        return weights[..., int(cls[0]), :], "CLS"
    return weights[..., located, :].mean(-2), "mean"


def _pixels(batch: Any) -> Tensor | None:
    """The batch's images (B, C, H, W): its one 4-D tensor, if it has one (read without
    naming the task's field, so any image task's batch serves)."""
    if not isinstance(batch, dict):
        return None
    found = [v for v in batch.values() if isinstance(v, Tensor) and v.dim() == 4]
    return found[0] if len(found) == 1 else None


def image_examples(task: Task, net: Network, indices: list, batch: Any) -> list[Example]:
    """Every layer's weights, the pooled query's attention over the patch grid per layer
    and the rollout of all layers."""
    seen, _ = _run(task, net, batch, "test")
    layers = _require(seen.layers(cross=False), "self-attention")
    positions = getattr(layers[0].ctx, "positions", None)
    if positions is None or positions.dim() != 3:
        raise ConfigError("the image task gave no 2-D patch positions (ctx.positions)")
    images = _pixels(batch)
    out = []
    for row, index in enumerate(indices):
        where = positions[row].cpu()  # (N, 2)
        located = (where >= 0).all(-1)
        maps = [r.weights[row] for r in layers]  # (h, N, N)
        pooled = []
        for w in maps:
            query_row, query = _pooled_row(w, located)  # (h, N)
            pooled.append(_patch_grid(query_row, where, located))  # (h, rows, cols)
        rolled, _ = _pooled_row(rollout(maps), located)
        tokens = [
            f"{int(r)},{int(c)}" if ok else "CLS"
            for (r, c), ok in zip(where.tolist(), located.tolist())
        ]
        extra = {
            "query": query,
            "pooled": pooled,  # per layer (h, rows, cols)
            "rollout": _patch_grid(rolled, where, located),  # (rows, cols)
            "pixels": images[row] if images is not None else None,  # (C, H, W)
        }
        out.append(Example(index, maps, tokens=tokens, extra=extra))
    return out


def graph_examples(
    task: Task, net: Network, split: str, nodes: list[int], option: str = "--index "
) -> list[Example]:
    """Each chosen node's neighbourhood (itself first, then the nodes it attends along its
    edges; a hub's cut to its GRAPH_NEIGHBOURS most attended) in every layer and head."""
    batch = next(iter(task.dataloader(split)))  # one batch: the whole graph
    seen, _ = _run(task, net, batch, "test")
    layers = _require(seen.layers(cross=False), "self-attention")
    weights = [r.weights[0] for r in layers]  # (h, N, N)
    n = weights[0].size(-1)
    edges = getattr(layers[0].ctx, "edges", None)
    if edges is None:
        raise ConfigError("the graph task gave no edges (ctx.edges)")
    edges = edges.cpu()
    out = []
    for node in nodes:
        if not 0 <= node < n:
            raise ConfigError(f"{option}{node}: the graph has {n} nodes (0..{n - 1})")
        around = edges[1][edges[0] == node] % n
        around = torch.unique(around[around != node])  # its neighbours, not itself
        degree = len(around)
        if degree > GRAPH_NEIGHBOURS:
            strength = weights[-1].mean(0)[node, around]
            around = around[strength.argsort(descending=True)[:GRAPH_NEIGHBOURS]].sort().values
        keep = torch.cat([torch.tensor([node]), around])
        maps = [w[:, keep][:, :, keep] for w in weights]  # (h, K, K)
        extra = {"degree": degree, "shown": len(keep) - 1}
        out.append(Example(node, maps, tokens=[str(i) for i in keep.tolist()], extra=extra))
    return out


EXTRACT = {TOKENS: token_examples, TRANSLATION: translation_examples, IMAGE: image_examples}
