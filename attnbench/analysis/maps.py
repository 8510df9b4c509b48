"""``attnbench maps``: what a finished run's attention attends to.

    attnbench maps RUN_DIR [--split test] [--index 0,5,9] [--text "I saw a saw"]
                   [--layer L] [--head H] [--out DIR] [--stats [--batches 20]]

Rebuilds the run's model from its directory (config and last checkpoint, no Lightning),
runs the chosen examples with every attention module captured and writes, under --out
(default RUN_DIR/maps):
  * token tasks: tokens_<index>.png/.svg, a layers x heads grid of heatmaps;
  * translation: alignment_<index>.png/.svg, the last decoder layer's cross-attention of the
    generated target over the source, mean and per head;
  * images: patches_<index>.png/.svg, the pooled (CLS or mean) query's attention over the
    patches per layer, overlaid on the image, and attention rollout;
  * graphs: node_<index>.png/.svg, the node's attention over its neighbourhood;
  * maps.json, the weights themselves (read by ``attnbench report --html``):
    {"task", "kind", "examples": [{"index", "tokens" | "source"/"target", "layers"}]},
    layers[l][h] an (Nq x Nk) list rounded to 4 decimals;
  * with --stats: head_stats.csv and head_distance.png/.svg, each head's mean attention
    distance and entropy over --batches batches of the split.
Layers and heads count from 0 (--layer -1 is the last).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch

from attnbench.analysis import examples as ex
from attnbench.analysis.capture import attention_modules, capture
from attnbench.analysis.loading import LoadedRun, load_run
from attnbench.analysis.stats import HeadStats
from attnbench.registry import AttnbenchError, ConfigError

DEFAULT_INDICES = "0,1,2"
STEMS = {ex.TOKENS: "tokens", ex.TRANSLATION: "alignment", ex.IMAGE: "patches", ex.GRAPH: "node"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attnbench maps",
        description="Attention maps and head statistics of a finished run.",
    )
    p.add_argument("run_dir", type=Path, help="a run's directory (holds .hydra/, checkpoints/)")
    p.add_argument("--split", default="test", help="the split the examples come from")
    p.add_argument(
        "--index",
        default=DEFAULT_INDICES,
        help=f"comma-separated example indices in the split (node ids on graphs; "
        f"default {DEFAULT_INDICES})",
    )
    p.add_argument("--text", help="a sentence to run instead, in the task's vocabulary")
    p.add_argument("--layer", type=int, help="draw only this layer (default: all)")
    p.add_argument("--head", type=int, help="draw only this head (default: all)")
    p.add_argument("--out", type=Path, help="output directory (default RUN_DIR/maps)")
    p.add_argument("--stats", action="store_true", help="also per-head distance and entropy")
    p.add_argument("--batches", type=int, default=20, help="batches --stats reads (default 20)")
    return p


def _indices(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--index {text!r}: give comma-separated integers, e.g. 0,5,9") from None
    if not indices or min(indices) < 0:
        raise ConfigError(f"--index {text!r}: give indices >= 0, e.g. 0,5,9")
    return list(dict.fromkeys(indices))


def _chosen(count: int, pick: int | None, what: str) -> list[int]:
    """All of ``count`` layers/heads, or the one asked for (negative counts from the end)."""
    if pick is None:
        return list(range(count))
    if not -count <= pick < count:
        raise ConfigError(f"--{what} {pick}: the model has {count} {what}s (0..{count - 1})")
    return [pick % count]


def collect(run: LoadedRun, args: argparse.Namespace, kind: str) -> list[ex.Example]:
    task, net = run.task, run.net
    if args.text is not None:
        if kind == ex.GRAPH:
            raise ConfigError("--text does not apply to a graph task; pick nodes with --index")
        batch = ex.encode_text(task, args.text)
        try:
            [example] = ex.EXTRACT[kind](task, net, [None], batch)
        except KeyError as e:  # the task's embedder reads a field a sentence does not give
            raise ConfigError(
                f"task {run.plugins['task'][0]!r} needs {e} in a batch, which --text cannot "
                "give; pick examples of a split with --index"
            ) from None
        example.text = args.text
        return [example]
    ex.check_split(task, args.split)
    indices = _indices(args.index)
    if kind == ex.GRAPH:
        return ex.graph_examples(task, net, args.split, indices)
    found = {}
    for chosen, batch in ex.examples_at(task, args.split, indices):
        found.update(zip(chosen, ex.EXTRACT[kind](task, net, chosen, batch)))
    return [found[i] for i in indices]  # in the order asked for


def _rounded(t: torch.Tensor, places: int = 4) -> list:
    """Nested lists of floats rounded to ``places`` decimals: maps.json stays small."""
    scale = 10.0**places
    return (torch.round(t.double() * scale) / scale).tolist()


def to_json(task_name: str, kind: str, examples: list[ex.Example]) -> dict[str, Any]:
    out = []
    for e in examples:
        item: dict[str, Any] = {"index": e.index}
        if e.text is not None:
            item["text"] = e.text
        if kind == ex.TRANSLATION:
            item["source"], item["target"] = e.source, e.target
        else:
            item["tokens"] = e.tokens
        item["layers"] = [_rounded(w) for w in e.layers]
        if kind == ex.IMAGE:
            item["query"] = e.extra["query"]
            item["rollout"] = _rounded(e.extra["rollout"])
        if kind == ex.GRAPH:
            item["degree"] = e.extra["degree"]
        out.append(item)
    return {"task": task_name, "kind": kind, "examples": out}


def figure(kind: str, example: ex.Example, layers: list[int], heads: list[int], label: str):
    """The matplotlib Figure of one example's maps, as this verb draws it for its kind
    (also what ``callbacks=attention_maps`` logs during training)."""
    from attnbench.analysis import map_figures as fig

    if kind == ex.TOKENS:
        return fig.token_grid(example, layers, heads, label)
    if kind == ex.TRANSLATION:
        return fig.alignment(example, heads, label)
    if kind == ex.IMAGE:
        return fig.image_overlay(example, layers, heads, label)
    return fig.graph_neighbourhood(example, layers, heads, label)


def draw(kind: str, examples: list[ex.Example], args, out: Path, title: str) -> list[Path]:
    from attnbench.analysis import map_figures as fig

    written = []
    for e in examples:
        layers = _chosen(len(e.layers), args.layer, "layer")
        heads = _chosen(e.layers[0].size(0), args.head, "head")
        name = "text" if e.index is None else str(e.index)
        if e.index is None:
            label = f"{title}, {e.text!r}"
        elif kind == ex.GRAPH:
            label = f"{title}, {args.split} split"
        else:
            label = f"{title}, {args.split} #{e.index}"
        written += fig.save(figure(kind, e, layers, heads, label), out / f"{STEMS[kind]}_{name}")
    return written


def head_stats(run: LoadedRun, split: str, batches: int, kind: str) -> list[dict]:
    """Per (self-attention module, head) mean distance and entropy over the split's first
    ``batches`` batches; sequence-to-sequence tasks run teacher-forced (no generation)."""
    if batches < 1:
        raise ConfigError(f"--batches {batches}: give at least 1")
    stats = HeadStats(measure_distance=kind != ex.GRAPH)
    stage = "train" if kind == ex.TRANSLATION else "test"  # "train": no decoding loop
    with torch.no_grad(), capture(run.net, on_record=stats.add):
        for i, batch in enumerate(run.task.dataloader(split)):
            if i == batches:
                break
            if kind == ex.TRANSLATION:  # the decoder's real queries: those with a label
                stats.decoder_queries = batch["tgt"][:, 1:] != ex.PAD
            run.task.forward(run.net, batch, stage)
    return stats.rows()


def write_stats(rows: list[dict], out: Path) -> list[Path]:
    from attnbench.analysis import map_figures as fig

    path = out / "head_stats.csv"
    columns = ["layer", "module", "attention", "head", "mean_distance", "entropy", "queries"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **row,
                    "mean_distance": ""
                    if row["mean_distance"] is None
                    else f"{row['mean_distance']:.4f}",
                    "entropy": f"{row['entropy']:.4f}",
                }
            )
    return [path, *fig.save(fig.head_distance(rows), out / "head_distance")]


def make_maps(args: argparse.Namespace) -> list[Path]:
    run = load_run(args.run_dir)
    task_name, _ = run.plugins["task"]
    model_name, _ = run.plugins["model"]
    if not attention_modules(run.net):
        raise ConfigError(
            f"model {model_name!r} has no attention module, so there is no attention to "
            "show; pick a run of a model with attention (model=transformer, or model=rnn "
            "with model.use_attention=true on translation)"
        )
    kind = ex.kind_of(run.task)
    examples = collect(run, args, kind)
    _chosen(len(examples[0].layers), args.layer, "layer")  # a bad pick fails before writing
    _chosen(examples[0].layers[0].size(0), args.head, "head")
    out = args.out or args.run_dir / "maps"
    out.mkdir(parents=True, exist_ok=True)
    maps_json = out / "maps.json"
    maps_json.write_text(json.dumps(to_json(task_name, kind, examples), separators=(",", ":")))
    attention_name = run.plugins["attention"][0]
    title = f"{task_name} · {model_name} · {attention_name}"
    written = [maps_json, *draw(kind, examples, args, out, title)]
    if args.stats:
        written += write_stats(head_stats(run, args.split, args.batches, kind), out)
    return written


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 with the files written listed; 2 with one line for a directory that
    is no finished run, a model without attention or a bad option."""
    args = parser().parse_args(argv)
    try:
        written = make_maps(args)
    except AttnbenchError as e:
        print(f"attnbench: error: {e}", file=sys.stderr)
        return 2
    print(f"attnbench maps: wrote {len(written)} files to {written[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
