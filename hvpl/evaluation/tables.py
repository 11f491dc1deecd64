"""Paper-style result tables per scenario: ``tables/<scenario>.md`` and ``tables/<scenario>.tex``.

Laid out like the paper's Tables 1-3: one row per method, columns AP, AP50, AP75, AR1 | FAP, FAR1 | #Params, in %
at the final step; ``mean ± std`` over the runs (seeds and class orders) when there are several, the plain value
with one run. The best value of each column among the continual methods is bold (highest AP/AR, lowest
forgetting and parameter count; joint training, the upper bound, is not ranked). For the paper's six scenarios
a second table puts the paper's numbers (protocol.md Section 5, ``paper_results.yaml``) beside ours with the
difference ours - paper. The .tex files hold ``tabular`` environments only (booktabs-free), for ``\\input``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from hvpl.utils.io import atomic_write_text

PERCENT = 100.0
MILLION = 1e6
THOUSAND = 1e3
METRICS = ["AP", "AP50", "AP75", "AR1"]
FORGETTING = ["FAP", "FAR1"]
PARAMS = "trainable_params"
LOWER_IS_BETTER = set(FORGETTING) | {PARAMS}
NOT_RANKED = {"joint"}
PAPER_COLUMNS = METRICS + FORGETTING
HEADER = {**{k: k for k in METRICS + FORGETTING}, PARAMS: "#Params"}
MISSING = "–"
PAPER_FILE = Path(__file__).with_name("paper_results.yaml")


@lru_cache(maxsize=1)
def paper_results() -> dict:
    """{scenario: {method: {metric: value in %}}} of protocol.md Section 5."""
    return yaml.safe_load(PAPER_FILE.read_text())["scenarios"]


def _method_order(methods) -> list:
    from hvpl.continual.methods import METHODS

    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def table_values(final: pd.DataFrame) -> pd.DataFrame:
    """Per method (index): ``<col>_mean``, ``<col>_std`` (None with one run) and ``runs`` of the final step's rows
    of one scenario; metrics in %."""
    from hvpl.evaluation.summary import mean_std

    out = {}
    for method, g in final.groupby("method"):
        row = {"runs": len(g)}
        for col in METRICS + FORGETTING + [PARAMS]:
            mean, std = mean_std(g[col], col)
            scale = 1.0 if col == PARAMS else 1.0 / PERCENT
            row[f"{col}_mean"] = None if mean is None else mean / scale
            row[f"{col}_std"] = None if std is None else std / scale
        out[method] = row
    return pd.DataFrame.from_dict(out, orient="index").reindex(_method_order(out))


def _best(values: pd.DataFrame, col: str):
    ranked = values.loc[[m for m in values.index if m not in NOT_RANKED], f"{col}_mean"].dropna()
    if ranked.empty:
        return None
    return ranked.min() if col in LOWER_IS_BETTER else ranked.max()


def _cell(values: pd.DataFrame, method: str, col: str, best, pm: str) -> tuple:
    """(text, bold) of one cell."""
    mean, std = values.at[method, f"{col}_mean"], values.at[method, f"{col}_std"]
    if mean is None or pd.isna(mean):
        return MISSING, False
    if col == PARAMS:    # the same in every run of a method: no spread shown
        text = _params_text(mean)
        return text, best is not None and method not in NOT_RANKED and text == _params_text(best)
    text = f"{mean:.2f}"
    if std is not None and not pd.isna(std):
        text += f" {pm} {std:.2f}"
    bold = best is not None and method not in NOT_RANKED and f"{mean:.2f}" == f"{best:.2f}"
    return text, bold


def _params_text(n: float) -> str:
    """A parameter count as the paper writes it (0.94M); below 10K in thousands (tiny CPU models)."""
    return f"{n / MILLION:.2f}M" if n >= MILLION / 100 else f"{n / THOUSAND:.1f}K"


def _rows(values: pd.DataFrame, pm: str) -> list:
    """[(method, [(text, bold)] per column)] of the main table."""
    cols = METRICS + FORGETTING + [PARAMS]
    best = {c: _best(values, c) for c in cols}
    return [(m, [_cell(values, m, c, best[c], pm) for c in cols]) for m in values.index]


def _paper_rows(values: pd.DataFrame, paper: dict) -> list:
    """[(method, kind, [text per column])]: ours, paper and ours - paper of every method the paper reports."""
    rows = []
    for method, numbers in paper.items():
        ours = [values.at[method, f"{c}_mean"] if method in values.index else None for c in PAPER_COLUMNS]
        ours = [None if v is None or pd.isna(v) else float(v) for v in ours]
        theirs = [numbers.get(c) for c in PAPER_COLUMNS]
        diff = [None if a is None or b is None else a - b for a, b in zip(ours, theirs)]
        for kind, vals, fmt in (("ours", ours, "{:.2f}"), ("paper", theirs, "{:.2f}"), ("diff", diff, "{:+.2f}")):
            rows.append((method, kind, [MISSING if v is None else fmt.format(v) for v in vals]))
    return rows


def _md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for char in ("_", "%", "&", "#"):
        text = text.replace(char, "\\" + char)
    return text


def _tex_table(spec: str, header: list, rows: list) -> str:
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\hline", " & ".join(header) + r" \\", r"\hline"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _runs_note(values: pd.DataFrame, final: pd.DataFrame) -> str:
    runs = sorted({int(r) for r in values["runs"]})
    seeds, orders = sorted(final["seed"].unique()), sorted(final["order"].unique())
    return (f"final step {int(final['step'].max())}; {'/'.join(map(str, runs))} run(s) per method "
            f"(seeds {', '.join(map(str, seeds))}; class orders {', '.join(map(str, orders))}); values in %, "
            "mean ± std over the runs when there are several; bold: best continual method per column")


def _final(df: pd.DataFrame) -> pd.DataFrame:
    from hvpl.evaluation.summary import final_runs

    return final_runs(df)


def render_markdown(scenario: str, df: pd.DataFrame, paper: dict | None) -> str:
    """The Markdown file of one scenario from its summary rows ``df`` (the final step's are used)."""
    final = _final(df)
    values = table_values(final)
    header = ["Method"] + [HEADER[c] for c in METRICS + FORGETTING + [PARAMS]]
    rows = [[m] + [f"**{t}**" if b else t for t, b in cells] for m, cells in _rows(values, "±")]
    text = f"# {scenario}\n\n{_runs_note(values, final)}.\n\n" + _md_table(header, rows)
    if paper:
        prows = [[m, kind] + vals for m, kind, vals in _paper_rows(values, paper)]
        text += ("\n## Ours vs the paper\n\nThe paper's numbers: protocol.md Section 5 (final step, %); diff = ours - "
                 "paper.\n\n" + _md_table(["Method", "", *PAPER_COLUMNS], prows))
    return text


def render_latex(scenario: str, df: pd.DataFrame, paper: dict | None) -> str:
    """The .tex file of one scenario (tabular environments and comments) from its summary rows ``df``."""
    final = _final(df)
    values = table_values(final)
    header = ["Method"] + [_tex_escape(HEADER[c]) for c in METRICS + FORGETTING + [PARAMS]]
    rows = [[_tex_escape(m)] + [rf"\textbf{{{t}}}" if b else t for t, b in cells]
            for m, cells in _rows(values, r"$\pm$")]
    text = f"% {_tex_escape(scenario)}: {_runs_note(values, final).replace('±', 'pm')}\n"
    text += _tex_table("l|cccc|cc|c", header, rows)
    if paper:
        prows = [[_tex_escape(m), kind] + [v.replace(MISSING, "--") for v in vals]
                 for m, kind, vals in _paper_rows(values, paper)]
        text += "% ours vs the paper (protocol.md Section 5); diff = ours - paper\n"
        text += _tex_table("ll|cccc|cc", ["Method", "", *PAPER_COLUMNS], prows)
    return text.replace(MISSING, "--")


def write_tables(df: pd.DataFrame, tables_dir: Path) -> list:
    """``<scenario>.md`` and ``<scenario>.tex`` for every scenario of the summary ``df``; returns the paths."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario, rows in df.groupby("scenario", sort=True):
        paper = paper_results().get(scenario)
        for suffix, render in ((".md", render_markdown), (".tex", render_latex)):
            path = tables_dir / f"{scenario}{suffix}"
            atomic_write_text(path, render(scenario, rows, paper))
            written.append(path)
    return written
