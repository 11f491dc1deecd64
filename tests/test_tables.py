"""Paper-style tables (hvpl.evaluation.tables): layout, mean ± std, bold best, the paper comparison, valid LaTeX."""
from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from hvpl.evaluation.tables import paper_results, render_latex, render_markdown, write_tables


def summary_rows(scenario: str, runs: dict) -> pd.DataFrame:
    """Final-step rows (step 2) of a summary; ``runs`` = {method: [(order, seed, AP, FAP, params)]}."""
    rows = []
    for method, entries in runs.items():
        for order, seed, ap, fap, params in entries:
            rows.append({"scenario": scenario, "dataset": "synthetic", "method": method, "order": order,
                         "seed": seed, "step": 2, "AP": ap, "AP50": ap + 0.1, "AP75": ap - 0.1, "AR1": ap / 2,
                         "FAP": fap, "FAR1": fap, "trainable_params": params})
            rows.append(dict(rows[-1], step=1, AP=0.99))       # an earlier step: not in the table
    return pd.DataFrame(rows)


RUNS = {"hvpl": [(0, 0, 0.30, 0.10, 940_000), (1, 0, 0.34, 0.14, 940_000)],
        "finetune": [(0, 0, 0.10, 0.50, 55_400_000)],
        "joint": [(0, 0, 0.60, None, 55_400_000)]}


def cells(markdown: str, method: str) -> list:
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_rows_are_methods_with_mean_std_over_runs_and_the_best_in_bold():
    md = render_markdown("synth_x", summary_rows("synth_x", RUNS), None)
    header = next(ln for ln in md.splitlines() if ln.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "AP", "AP50", "AP75", "AR1", "FAP",
                                                                  "FAR1", "#Params"]
    hvpl, finetune, joint = cells(md, "hvpl"), cells(md, "finetune"), cells(md, "joint")
    assert hvpl[0] == "**32.00 ± 2.00**"                   # mean ± std (population) over its two runs, in %
    assert hvpl[4] == "**12.00 ± 2.00**"                   # lowest forgetting is best
    assert finetune[0] == "10.00" and "±" not in " ".join(finetune)   # one run: no ±
    assert finetune[6] == "55.40M" and hvpl[6] == "**0.94M**"
    assert joint[0] == "60.00" and joint[4] == "–"         # the upper bound is not ranked; no forgetting
    assert "Ours vs the paper" not in md
    assert not re.search(r"\| *\|", md.split("\n\n", 2)[2])   # no empty cell


def test_paper_scenarios_get_the_comparison_table():
    paper = paper_results()
    assert set(paper) == {"ytvis2019_20-2", "ytvis2019_20-5", "ytvis2021_30-10", "ytvis2021_20-4", "ovis_15-5",
                          "ovis_15-10"}
    assert paper["ytvis2019_20-5"]["hvpl"]["AP"] == pytest.approx(34.79)
    md = render_markdown("ytvis2019_20-5", summary_rows("ytvis2019_20-5", RUNS), paper["ytvis2019_20-5"])
    comparison = md.split("## Ours vs the paper", 1)[1]
    rows = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): [c.strip() for c in ln.strip("|").split("|")[2:]]
            for ln in comparison.splitlines() if ln.startswith("| ") and not ln.startswith("| Method")}
    assert rows[("hvpl", "ours")][0] == "32.00" and rows[("hvpl", "paper")][0] == "34.79"
    assert rows[("hvpl", "diff")][0] == "-2.79"
    assert rows[("finetune", "paper")][1] == "–"           # the paper gives fine-tuning's AP only
    assert rows[("eclipse", "ours")][0] == "–"             # a method the paper reports and we did not run


def test_write_tables_one_md_and_tex_per_scenario(tmp_path):
    df = pd.concat([summary_rows("synth_x", RUNS), summary_rows("ovis_15-5", RUNS)])
    written = write_tables(df, tmp_path / "tables")
    assert sorted(p.name for p in written) == ["ovis_15-5.md", "ovis_15-5.tex", "synth_x.md", "synth_x.tex"]
    assert "\\begin{tabular}" in (tmp_path / "tables" / "ovis_15-5.tex").read_text()


def _check_tabular_structure(tex: str) -> None:
    """Every tabular: begin/end pairs, each row with as many cells as the column spec, special characters
    escaped, braces balanced."""
    blocks = re.findall(r"\\begin\{tabular\}\{([^}]*)\}\n(.*?)\\end\{tabular\}", tex, re.S)
    assert blocks and tex.count("\\begin{tabular}") == len(blocks) == tex.count("\\end{tabular}")
    for spec, body in blocks:
        ncols = len(re.sub(r"[^lcr]", "", spec))
        for line in body.splitlines():
            if line.strip() in ("\\hline", ""):
                continue
            assert line.endswith("\\\\"), line
            assert len(re.split(r"(?<!\\)&", line)) == ncols, line
            assert line.count("{") == line.count("}"), line
            assert not re.search(r"(?<!\\)[_#%]", line), line


def test_latex_is_valid_tabular_code(tmp_path):
    tex = render_latex("ytvis2019_20-5", summary_rows("ytvis2019_20-5", RUNS), paper_results()["ytvis2019_20-5"])
    _check_tabular_structure(tex)
    assert "\\textbf{32.00 $\\pm$ 2.00}" in tex and "\\#Params" in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: structure checked only")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\begin{document}\n" + tex + "\n\\end{document}\n")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (tmp_path / "doc.pdf").is_file()
