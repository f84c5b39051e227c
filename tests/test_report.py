"""report.md / report.html from the summary.json of a tiny real pipeline run: complete,
self-contained, and carrying exactly the numbers of the summary."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from helpers import make_teacher, tiny_recipe

from modnet_prune.pipeline.recipe import recipe_from_dict
from modnet_prune.pipeline.run import run_pipeline
from modnet_prune.pipeline.summary import merge_summaries
from modnet_prune.report.document import headlines, main_table, render_report, sections
from modnet_prune.report.figures import _pareto_front


def _tiny_run(folder, name: str, ratio: float, **keys):
    teacher = folder / "teacher.safetensors"
    data = tiny_recipe(teacher if teacher.exists() else make_teacher(folder),
                       finetune={"samples": 16, "eval_every_samples": 8}, **keys)
    data.update(name=name, prune={"method": "ratio", "ratio": ratio, "round_to": 4}, distill={})
    return run_pipeline(recipe_from_dict(data), folder / name, progress=False, echo=lambda _: None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    _tiny_run(folder, "run", 0.5)
    return folder / "run"


class _Page(HTMLParser):
    """Tables (rows of cell texts), image sources and every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href", "srcset", "action")]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _page(run_dir) -> _Page:
    page = _Page()
    page.feed((run_dir / "report.html").read_text())
    return page


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("×%"))


@pytest.mark.slow  # the fixture runs the pipeline (~20 s on 2 busy cores)
def test_html_is_self_contained_with_every_figure_embedded(run_dir):
    page = _page(run_dir)
    # the one link out: the run's own web page (a sibling folder), when the run wrote one
    summary = json.loads((run_dir / "summary.json").read_text())
    web = summary["web"]["dir"] and f"{summary['web']['dir']}/index.html"
    assert web is None or (web in page.links and (run_dir / web).is_file())
    links = [link for link in page.links if link != web]
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    text = (run_dir / "report.html").read_text()
    assert "url(" not in text and "@import" not in text and "<script" not in text
    assert len(page.images) == 4  # pareto, samples, curves, widths
    for src in page.images:
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert png.format == "PNG" and min(png.size) > 100
    for figure in ("pareto", "samples", "curves", "widths"):
        assert (run_dir / "figures" / f"{figure}.png").is_file()
        assert f"](figures/{figure}.png)" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_table_numbers_are_the_summary_numbers(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    _groups, header, *rows = _page(run_dir).tables[0]  # first row: column groups
    by_label = {row[0]: dict(zip(header, row)) for row in rows}
    for model in summary["models"]:
        cells = by_label[model["label"]]
        assert _number(cells["params"]) == model["params"]
        assert _number(cells["MACs inference (M)"]) == pytest.approx(model["macs"] / 1e6, abs=0.05)
        assert _number(cells["vs teacher"]) == pytest.approx(100 * model["macs_fraction"], abs=0.05)
        assert _number(cells["MACs training graph (M)"]) == pytest.approx(model["macs_train"] / 1e6, abs=0.05)
        assert _number(cells["ONNX (kB)"]) == pytest.approx(model["onnx_bytes"] / 1000, abs=0.5)
        for column, runtime in (("PyTorch (ms)", "torch"), ("ONNX Runtime (ms)", "onnxruntime")):
            median = model["latency"][runtime]["median_ms"]
            assert _number(cells[column]) == pytest.approx(median, abs=0.05 if median >= 10 else 0.005)
        for column, runtime in (("speed-up PyTorch", "torch"), ("speed-up ORT", "onnxruntime")):
            assert _number(cells[column]) == pytest.approx(model["speedup"][runtime], abs=0.005)
        for metric in ("MSE", "MAD", "SAD", "Grad", "Conn"):
            value = model["metrics"]["whole"][metric.lower()]
            assert _number(cells[metric]) == pytest.approx(value, rel=5e-4, abs=1e-12)
    # the origin rows publish latency without accuracy: marked as the architecture's
    assert by_label["origin: V2 (theirs) †"]["params"] == "1.76 M"
    # the student really is smaller, and says so
    teacher, student = summary["models"]
    assert student["params"] < teacher["params"] and student["macs_fraction"] < 1


@pytest.mark.slow
def test_markdown_and_html_tables_agree(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    table = main_table(summary)
    markdown = (run_dir / "report.md").read_text()
    for row in table.rows:
        assert "| " + " | ".join(row) + " |" in markdown
    html_rows = _page(run_dir).tables[0][2:]
    assert html_rows == table.rows


@pytest.mark.slow
def test_markdown_and_html_say_one_headline_in_one_section_list(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    markdown, page = (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()
    titles = [s.title for s in sections(summary, {"pareto", "samples", "curves", "widths"})]
    assert [line[3:] for line in markdown.splitlines() if line.startswith("## ")] == titles
    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", page)] == titles
    teacher, student = summary["models"]
    [headline] = headlines(summary)
    facts = {what: value for value, what in headline.facts}
    assert facts["of the teacher's inference MACs"] == f"{100 * student['macs_fraction']:.1f}%"
    mad = student["metrics"]["whole"]["mad"] / teacher["metrics"]["whole"]["mad"]
    assert next(v for w, v in facts.items() if w.startswith("the teacher's held-out MAD")) == \
        f"{mad:.2f}×"
    for value, what in headline.facts:
        assert f"{value} {what}" in markdown
        assert (f'<div class="value">{html.escape(value)}</div>'
                f'<div class="label">{html.escape(what)}</div>') in page


@pytest.mark.slow
def test_report_is_rendered_from_summary_alone(run_dir, tmp_path):
    """Copying summary.json with the sample images it points to and rendering again gives
    the same Markdown: the report depends on nothing but the summary."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("summary.json", "samples", "predictions"):
        source = run_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy / name)
    summary = json.loads((copy / "summary.json").read_text())
    render_report(summary, copy)
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert _page(copy).tables == _page(run_dir).tables


@pytest.mark.slow  # a second tiny run
def test_merged_report_of_two_runs_keeps_each_runs_numbers(run_dir):
    """What benchmarks/compare_recipes.py renders: two students of one teacher."""
    root = run_dir.parent
    first = json.loads((run_dir / "summary.json").read_text())
    quantize = {"calibration": "synthetic:6@64+seed7", "count": 4, "holdout": 2, "budget": 0.5}
    second = _tiny_run(root, "other", 0.375, quantize=quantize)
    merged = merge_summaries({run_dir: first, root / "other": second}, root)
    render_report(merged, root)
    rows = {row[0]: row for row in _page(root).tables[0][2:]}
    # "run" has no int8 copies: the teacher's comes from "other"
    assert list(rows)[:5] == ["teacher", "run", "other", "teacher int8", "other int8"]
    for summary in (first, second):
        own = {row[0]: row for row in main_table(summary).rows}
        assert rows[summary["recipe"]["name"]][1:] == own[summary["models"][1]["label"]][1:]
    own = {row[0]: row for row in main_table(second).rows}
    assert rows["teacher int8"][1:] == own["teacher int8"][1:]
    assert rows["other int8"][1:] == own[second["models"][3]["label"]][1:]
    assert [v["run"] for v in merged["variants"]] == [None, "run", "run", "run",
                                                      "other", "other", "other", None, None]
    assert [v["label"] for v in merged["variants"][-2:]] == ["teacher int8", "other int8"]
    assert merged["quantization"] == {**second["quantization"], "refused": {}}  # notes come from it
    grid = merged["samples"][0]["images"]
    assert list(grid) == ["input", "ground truth", "teacher", "run", "other"]
    assert all((root / path).is_file() for path in grid.values())


def _model(name: str, role: str, mad: float | None, mad_eval: float | None) -> dict:
    whole = (lambda v: {"whole": dict.fromkeys(("mse", "mad", "sad", "grad", "conn"), v)})
    return {"name": name, "label": name, "role": role, "params": 1000, "macs": 2e6,
            "macs_fraction": 0.5, "macs_train": 3e6, "weight_bytes": 4000, "onnx_bytes": 4000,
            "latency": {"torch": {"median_ms": 12.0}}, "speedup": {"torch": 1.5},
            "metrics": whole(mad) if mad is not None else None,
            "metrics_eval": whole(mad_eval) if mad_eval is not None else None}


def test_main_table_pairs_latency_with_accuracy_at_the_deployment_size():
    summary = {"size": [512, 512],
               "evaluation": {"size": 512, "eval_size": 128, "region": "whole image"},
               "models": [_model("teacher", "teacher", 0.25, 0.005),
                          _model("student", "student", 0.125, 0.0075),
                          _model("untrained", "student", None, None)]}
    table = main_table(summary)
    assert ("held-out errors at 512×512, whole image", 5) in table.groups
    assert table.groups[-1] == ("beside: at 128×128", 2)
    rows = {row[0]: dict(zip(table.headers, row)) for row in table.rows}
    assert rows["student"]["MAD"] == "0.125" and rows["student"]["MAD at 128×128"] == "0.0075"
    assert rows["untrained †"]["MAD"] == "–"  # a latency with no accuracy at its size
    same = {**summary, "evaluation": {"size": 512, "eval_size": 512, "region": "whole image"}}
    assert not any(h.startswith("MAD at") for h in main_table(same).headers)


def test_pareto_front_keeps_only_undominated_points():
    macs = np.array([1.0, 2.0, 3.0, 0.5, 2.0])
    mad = np.array([0.5, 0.3, 0.4, 0.9, 0.35])
    # (3, 0.4) is beaten by (2, 0.3); (2, 0.35) by (2, 0.3) at equal MACs
    assert _pareto_front(macs, mad).tolist() == [3, 0, 1]


def test_int8_notes_name_the_float_summed_taps():
    """An int8 row whose lr16x sums its upsampled taps in float says so; an older run
    folder's row, without the field, is described as before."""
    from modnet_prune.report.document import _int8_notes

    int8 = {"method": "minmax", "count": 32, "calibration": "synthetic:40@512", "size": 512,
            "holdout": 8, "delta_mean": 6.3e-4, "budget": 2e-3, "delta_p99": 1.9e-2,
            "float_ops": ["InstanceNormalization"], "kept_float": [],
            "capability": {"description": "x86 with VNNI"}}
    rows = [{"role": "int8", "label": "teacher int8",
             "int8": {**int8, "summed_taps": ["/lr16x/conv/Resize", "a", "b"]}},
            {"role": "int8", "label": "old int8", "int8": int8}]
    new, old = _int8_notes({"quantization": {"refused": {}}, "models": rows})
    assert "float: InstanceNormalization; 3 nodes summing upsampled taps; CPU" in new
    assert "float: InstanceNormalization; CPU" in old
