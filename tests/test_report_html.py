"""``attnbench report DIR... --html FILE``: one offline page with the table, the runs left
out, the report plot, each run's learning curves and an interactive attention view where a
run has maps/maps.json. Checked as text and, where Debian's chromium is installed, rendered
in a real headless browser (the JS must build the views and react to hover without errors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from attnbench.report import main as report_main

# Layer 0 of the token example: head 0 is causal-looking, head 1 attends to the next token.
TOKENS = ["I", "saw", "a", "saw"]
L0H0 = [[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0.1, 0.2, 0.3, 0.4]]
L0H1 = [[0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0, 1.0]]
UNIFORM = [[0.25] * 4 for _ in range(4)]
IDENTITY = [[1.0 if q == k else 0.0 for k in range(4)] for q in range(4)]
# Layer 1 = (uniform, identity): their mean is 0.625 on the diagonal, 0.125 elsewhere.
LAYER1_MEAN = [[0.625 if q == k else 0.125 for k in range(4)] for q in range(4)]
SOURCE, TARGET = ["ein", "Hund"], ["a", "dog", "<eos>"]
ALIGNMENT = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]  # target x source


def write_run(path: Path, model: str, seed: int, acc: float | None, status: str = "ok") -> Path:
    path.mkdir(parents=True)
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
    summary = {
        "status": status,
        "reason": None if status == "ok" else "boom",
        "metrics": {} if acc is None else {"test/acc": acc, "val/acc": acc},
        "seed": seed,
        "params": 1000,
        "wall_seconds": 12.0,
        "plugins": {"task": {"name": "pos", "dataset": "ud_ewt"}, "model": {"name": model}},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    if acc is not None:
        (path / "csv").mkdir()
        (path / "csv" / "metrics.csv").write_text(
            "epoch,step,test/acc,train/loss,val/acc,val/loss\n"
            "0,9,,1.0,,\n"
            f"0,9,,,{acc - 0.1},0.9\n"
            "1,19,,0.5,,\n"
            f"1,19,,,{acc},0.6\n"
            f"2,20,{acc},,,\n"
        )
    return path


def write_maps(run: Path, maps: dict) -> None:
    (run / "maps").mkdir()
    (run / "maps" / "maps.json").write_text(json.dumps(maps))


TOKEN_MAPS = {
    "task": "pos",
    "kind": "tokens",
    "examples": [
        {"index": 0, "tokens": TOKENS, "layers": [[L0H0, L0H1], [UNIFORM, IDENTITY]]},
        {"index": 5, "tokens": TOKENS, "layers": [[L0H1, L0H0], [IDENTITY, UNIFORM]]},
    ],
}
TRANSLATION_MAPS = {
    "task": "translation",
    "kind": "alignment",
    "examples": [{"index": 2, "source": SOURCE, "target": TARGET, "layers": [[ALIGNMENT]]}],
}
TABLE = [
    ["pos", "ud_ewt", "cnn", "0.700", "1", "1,000", "12"],
    ["pos", "ud_ewt", "rnn", "0.850 ± 0.071", "2", "1,000", "12"],
]
LEFT_OUT = ["failed: 3: boom", "missing: 4: no summary.json: the job was killed or never ran"]


@pytest.fixture
def page(tmp_path) -> Path:
    """Runs 0, 1 (rnn), 2 (cnn) with learning curves; 0 with token maps, 2 with a
    translation alignment; 3 failed; 4 never wrote a summary."""
    sweep = tmp_path / "sweep"
    write_maps(write_run(sweep / "0", "rnn", 0, 0.9), TOKEN_MAPS)
    write_run(sweep / "1", "rnn", 1, 0.8)
    write_maps(write_run(sweep / "2", "cnn", 0, 0.7), TRANSLATION_MAPS)
    write_run(sweep / "3", "rnn", 2, None, status="failed")
    (sweep / "4" / ".hydra").mkdir(parents=True)
    out = tmp_path / "report" / "index.html"
    report_main([str(sweep), "--html", str(out)])
    return out


class Dom(HTMLParser):
    """What the tests read from a page: the table's rows, the list of runs left out,
    elements by class, attributes of <body> and the text of #probe."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.left_out: list[str] = []
        self.classes: dict[str, list[dict]] = {}
        self.tags: list[tuple[str, dict]] = []
        self.body: dict = {}
        self.probe = ""
        self._in: list[str] = []  # what the current text belongs to
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        for name in (attrs.get("class") or "").split():
            self.classes.setdefault(name, []).append(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "tbody":
            self._in.append("tbody")
        elif tag == "tr" and "tbody" in self._in:
            self.rows.append([])
        elif tag == "td" and "tbody" in self._in:
            self.rows[-1].append("")
            self._in.append("td")
        elif tag == "ul" and "left-out" in (attrs.get("class") or ""):
            self._in.append("left-out")
        elif tag == "li" and "left-out" in self._in:
            self.left_out.append("")
            self._in.append("li")
        elif tag == "pre" and attrs.get("id") == "probe":
            self._in.append("probe")

    def handle_endtag(self, tag):
        ends = {"td": "td", "tbody": "tbody", "li": "li", "ul": "left-out", "pre": "probe"}
        if tag in ends and self._in and self._in[-1] == ends[tag]:
            self._in.pop()

    def handle_data(self, data):
        where = self._in[-1] if self._in else ""
        if where == "td":
            self.rows[-1][-1] += data
        elif where == "li":
            self.left_out[-1] += data
        elif where == "probe":
            self.probe += data


def test_the_page_holds_the_table_the_runs_left_out_curves_and_maps(page):
    text = page.read_text()
    dom = Dom(text)
    assert dom.rows == TABLE
    assert dom.left_out == LEFT_OUT
    assert len(dom.classes["report-plot"]) == 1
    assert len(dom.classes["curves"]) == 3  # runs 0, 1, 2; the failed run logged nothing
    assert "no learning curves: no csv/metrics.csv" in text
    assert [s["data-status"] for s in dom.classes["run"]] == ["ok", "ok", "ok", "failed"]
    views = dom.classes["attn-view"]
    assert [(v["data-kind"], v["data-index"]) for v in views] == [
        ("tokens", "0"),
        ("tokens", "5"),
        ("alignment", "2"),
    ]
    weights = [json.loads(m) for m in re.findall(r'class="weights">(.*?)</script>', text)]
    assert weights[0] == {
        "queries": TOKENS,
        "keys": TOKENS,
        "layers": [[L0H0, L0H1], [UNIFORM, IDENTITY]],
    }
    assert weights[2] == {"queries": TARGET, "keys": SOURCE, "layers": [[ALIGNMENT]]}
    assert "<eos>" not in text.split("<script>")[0]  # the token travels escaped in the JSON


def test_the_page_loads_nothing_from_the_network(page):
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    dom = Dom(text)
    sources = [a.get("src") or a.get("href") for _, a in dom.tags if a.get("src") or a.get("href")]
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    assert not [t for t, a in dom.tags if t == "link" or (t == "script" and "src" in a)]
    csp = [a["content"] for t, a in dom.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


def test_a_broken_maps_file_is_a_note_and_the_page_is_still_written(tmp_path, capsys):
    bad_head = {"kind": "tokens", "examples": [{"tokens": TOKENS, "layers": [[L0H0, [[1.0]]]]}]}
    write_maps(write_run(tmp_path / "sweep" / "a", "rnn", 0, 0.9), bad_head)
    (write_run(tmp_path / "sweep" / "b", "rnn", 1, 0.8) / "maps").mkdir()
    (tmp_path / "sweep" / "b" / "maps" / "maps.json").write_text("{not json")
    out = tmp_path / "page.html"
    report_main([str(tmp_path / "sweep"), "--html", str(out)])
    text = out.read_text()
    assert "example 0: layer 0 head 1 is not 4 × 4" in text
    assert text.count("unreadable") == 2 and 'class="attn-view"' not in text
    assert "skipping" in capsys.readouterr().err


# Recorded on load, before the page's script runs: any error the page raises.
CATCH_ERRORS = """<script>addEventListener("error", (e) => {
  const root = document.documentElement;
  root.setAttribute("data-js-errors", (root.getAttribute("data-js-errors") || "") + e.message);
});</script>"""
# After the page's script: hover a query token, change layer and head, leave; record it all.
PROBE = """<script>addEventListener("load", () => {
  const out = {};
  const [view, , alignment] = document.querySelectorAll(".attn-view");
  const cells = (v) => [...v.querySelectorAll("rect.cell")].map(
    (r) => [+r.dataset.q, +r.dataset.k, +r.getAttribute("fill-opacity")]);
  out.initial = cells(view);
  view.querySelector('text.query[data-q="1"]').dispatchEvent(
    new MouseEvent("mouseover", {bubbles: true}));
  out.focus = view.dataset.focus;
  out.shades = [...view.querySelectorAll("rect.shade")].map((r) => +r.getAttribute("fill-opacity"));
  out.edges = [...view.querySelectorAll("line.edge:not(.off)")].map(
    (e) => [+e.dataset.q, +e.dataset.k, +e.getAttribute("stroke-opacity")]);
  out.readout = view.querySelector(".readout").textContent;
  for (const [name, value] of [["layer", "1"], ["head", "mean"]]) {
    const select = view.querySelector("select." + name);
    select.value = value;
    select.dispatchEvent(new Event("change"));
  }
  out.layer1mean = cells(view);
  view.querySelector("svg.tokens").dispatchEvent(new MouseEvent("mouseleave"));
  out.left = view.dataset.focus;
  out.edgesAfterLeave = view.querySelectorAll("line.edge:not(.off)").length;
  out.alignment = cells(alignment);
  out.targets = [...alignment.querySelectorAll("text.query")].map((t) => t.textContent);
  out.sources = [...alignment.querySelectorAll("text.key")].map((t) => t.textContent);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.append(pre);
});</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return found


def render_in_browser(page: Path, tmp_path: Path) -> tuple[Dom, str]:
    probed = page.with_name("probed.html")
    text = page.read_text()
    text = text.replace("<head>", "<head>" + CATCH_ERRORS, 1).replace("</body>", PROBE + "</body>")
    probed.write_text(text)
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return Dom(result.stdout), result.stderr


def opacities(matrix: list[list[float]]) -> list[list[float]]:
    return [[q, k, w] for q, row in enumerate(matrix) for k, w in enumerate(row)]


def test_a_browser_builds_the_views_and_they_follow_hover_layer_and_head(page, tmp_path):
    dom, log = render_in_browser(page, tmp_path)
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Uncaught" in line or "Refused" in line], console
    root = next(attrs for tag, attrs in dom.tags if tag == "html")
    assert "data-js-errors" not in root, root["data-js-errors"]
    assert dom.rows == TABLE and dom.left_out == LEFT_OUT
    assert dom.body.get("data-views") == "3"
    assert [v.get("data-ready") for v in dom.classes["attn-view"]] == ["1", "1", "1"]
    assert len(dom.classes["cell"]) == 4 * 4 + 4 * 4 + 3 * 2  # one per query x key
    probe = json.loads(dom.probe)
    assert probe["initial"] == opacities(L0H0)  # layer 0, head 0 on load: opacity = weight
    assert probe["focus"] == "1"
    assert probe["shades"] == L0H0[1]  # what "saw" attends to
    assert probe["edges"] == [[1, k, w] for k, w in enumerate(L0H0[1])]  # its lines only
    assert probe["readout"] == "saw attends to …"
    assert probe["layer1mean"] == opacities(LAYER1_MEAN)
    assert probe["left"] == "" and probe["edgesAfterLeave"] == 16
    assert probe["alignment"] == opacities(ALIGNMENT)
    assert probe["targets"] == TARGET and probe["sources"] == SOURCE
