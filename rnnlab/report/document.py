"""The report itself: report.md, report.html (self-contained) and the copy on the sweep run."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from rnnlab.config.expect import Reproduces
from rnnlab.report import checks as checks_
from rnnlab.report import figures
from rnnlab.report.load import Frames
from rnnlab.report.plotting import SHORT, order
from rnnlab.track.mlflow import MlflowTracker
from rnnlab.ui import ui_base


def condition_table(f: Frames) -> pd.DataFrame:
    """One row per condition (every swept key but the seed), medians over seeds with their
    spread: numeric columns, sorted by value (T numerically, activations in their order)."""
    keys = _condition_keys(f)
    runs = f.runs
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "runs"])
    groups = runs.groupby(keys, dropna=False, sort=False) if keys else [((), runs)]
    rows = []
    for values, g in groups:
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values, strict=True))
        row["runs"] = len(g)
        row["diverged"] = int((g.status == "diverged").sum())
        row["not finished"] = int((~g.status.isin(["finished", "diverged"])).sum())
        for col in ("final_loss_ratio", "slope_init", "slope_final"):
            v = g[col].astype(float) if col in g.columns else pd.Series(dtype=float)
            row[f"{col} median"] = v.median()
            row[f"{col} min"] = v.min()
            row[f"{col} max"] = v.max()
        rows.append(row)
    return _sorted(pd.DataFrame(rows), keys)


def run_table(f: Frames) -> pd.DataFrame:
    """One row per run: the swept keys as typed columns, then the results; sorted by value."""
    keys = [*_condition_keys(f), *(["seed"] if "seed" in f.swept else [])]
    cols = [
        *keys,
        "status",
        "final_loss_ratio",
        "slope_init",
        "slope_final",
        "diverged_step",
        "name",
    ]
    runs = f.runs.reindex(columns=cols)
    return _sorted(runs, keys)


def _condition_keys(f: Frames) -> list[str]:
    rest = [k for k in f.swept if k not in ("seed", f.col, f.hue)]
    return [k for k in (f.col, f.hue) if k] + rest


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if frame.empty or not keys:
        return frame.reset_index(drop=True)
    rank = {k: {v: i for i, v in enumerate(order(k, frame[k]))} for k in keys}
    sort = pd.DataFrame({k: frame[k].map(rank[k]) for k in keys})
    return frame.loc[sort.sort_values(keys).index].reset_index(drop=True)


def _head(key: str) -> str:
    return {
        "task.seq_len": "T",
        "model.activation": "activation",
        "model.cell": "cell",
        "final_loss_ratio": "loss ratio",
        "slope_init": "slope at init",
        "slope_final": "slope at end",
        "diverged_step": "diverged at step",
    }.get(key, key)


def _condition_rows(t: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    head = [*(_head(k) for k in keys), "runs", "diverged"]
    stats = ("final_loss_ratio", "slope_init", "slope_final")
    head += [f"{_head(s)}: median [min … max]" for s in stats]
    rows = []
    for r in t.to_dict("records"):
        cells = [_fmt(r[k]) for k in keys] + [str(r["runs"]), str(r["diverged"])]
        for s in stats:
            med, lo, hi = r[f"{s} median"], r[f"{s} min"], r[f"{s} max"]
            cells.append("" if not np.isfinite(med) else f"{_fmt(med)} [{_fmt(lo)} … {_fmt(hi)}]")
        rows.append(cells)
    return head, rows


def _summary(f: Frames) -> list[str]:
    """The report's opening paragraphs: what is drawn, and what is not."""
    counts = ", ".join(f"{n} {s}" for s, n in f.runs.status.value_counts().items()) or "no runs"
    swept = ", ".join(f"{SHORT.get(k, k)} ({f.runs[k].nunique()})" for k in f.swept) or "nothing"
    out = [f"**Drawn:** {f.selection}. {len(f.runs)} runs ({counts}). Swept: {swept}."]
    if not f.others.empty:
        keys = sorted(
            {d.split("=")[0] for ds in f.others.differs for d in ds.split(", ") if "=" in d}
        )
        fixed = [
            f"{k}={f.runs[k].iloc[0]}"
            for k in keys
            if k in f.runs.columns and f.runs[k].astype(str).nunique() == 1
        ]
        here = f" The drawn runs have {', '.join(fixed)}." if fixed else ""
        out.append(
            f"**Not drawn:** {len(f.others)} other runs in experiment '{f.experiment}' "
            f"(`rnnlab report --all` draws every run, `--where key=value` selects some).{here}"
        )
    hidden = f.runs[~f.runs.status.isin(["finished", "diverged"])]
    if len(hidden):
        out.append(
            f"**Listed, not drawn** ({len(hidden)} runs that did not finish): "
            + ", ".join(f"{r.name} ({r.status})" for r in hidden.itertuples())
        )
    if f.missing:
        shown = ", ".join(f.missing[:6]) + (", …" if len(f.missing) > 6 else "")
        out.append(
            f"**Missing:** {len(f.missing)} grid points have no run yet ({shown}); "
            "`rnnlab sweep` the file to add them."
        )
    return out


def _others_rows(f: Frames) -> tuple[list[str], list[list[str]]]:
    head = ["differs from the drawn grid in", "runs", "status", "logged by", "e.g."]
    rows = []
    for differs, g in f.others.groupby("differs", sort=True):
        status = ", ".join(f"{n} {s}" for s, n in g.status.value_counts().items())
        rows.append([differs, str(len(g)), status, ", ".join(sorted(set(g.sweep))), g.name.iloc[0]])
    return head, rows


def report(
    f: Frames,
    out: Path,
    checks: list[checks_.Outcome] = (),
    claim: Reproduces | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Every figure (PNG and PDF), report.md and report.html; returns report.md's path.
    ``checks``: the experiment's ``expect:`` checks evaluated (``rnnlab.report.checks``),
    shown first as the "Reproduction checks" table, under the ``claim`` they check.
    ``progress(i, n, name)`` is called before the i-th of the n registered figures is drawn
    (a second or more each), and with i = n before report.md and report.html are written."""
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    blocks: list[tuple] = [("h1", f.experiment)]
    blocks += [("p", text) for text in _summary(f)]
    if checks:
        passed = sum(o.ok for o in checks)
        said = f"{passed} of {len(checks)} checks hold."
        if claim:
            runtime = f" **Expected runtime:** {claim.runtime}." if claim.runtime else ""
            said = f"**Claim:** {claim.claim}. **Source:** {claim.source}.{runtime} {said}"
        blocks += [
            ("h2", "Reproduction checks"),
            ("p", said),
            ("table", checks_.HEAD, checks_.rows(checks)),
        ]
    if not f.drawn.empty:
        registered = figures.registered()
        for i, fig in enumerate(registered):
            if progress is not None:
                name = getattr(fig.draw, "__name__", f"figure {fig.number}")
                progress(i, len(registered), name.replace("_", " "))
            paths, caption = fig.render(f, out)
            if paths is None:  # a figure this experiment's sweep cannot show (e.g. no gain axis)
                continue
            blocks.append(("figure", paths[0].name, caption))
    else:
        blocks.append(("p", "Nothing to draw: no selected run finished."))
    keys = _condition_keys(f)
    if not f.runs.empty:
        blocks += [
            ("h2", "Per condition (median over seeds, [min … max])"),
            ("table", *_condition_rows(condition_table(f), keys)),
        ]
        runs = run_table(f)
        blocks += [
            ("h2", "Per run"),
            (
                "table",
                [_head(c) for c in runs.columns],
                [[_fmt(v) for v in r] for r in runs.itertuples(index=False)],
            ),
        ]
    if not f.others.empty:
        blocks += [("h2", "Other runs in this experiment (not drawn)"), ("table", *_others_rows(f))]
    if progress is not None:
        n = len(figures.registered())
        progress(n, n, "report.md and report.html")
    (out / "report.html").write_text(_html(f, blocks, out))
    path = out / "report.md"
    path.write_text(_markdown(blocks))
    return path


def _markdown(blocks: list[tuple], image_url=lambda name: name) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += [f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "figure":
            name, caption = rest
            lines += [f"![{caption}]({image_url(name)})", "", f"*{caption}*", ""]
        elif kind == "table":
            head, rows = rest
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
img{max-width:100%;height:auto;display:block;margin:1em auto 0}figure{margin:1.5em 0}
figcaption{font-style:italic;text-align:center;color:#555}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
td:last-child{text-align:left}code{background:#f3f3f3;padding:0 3px}"""


def _html(f: Frames, blocks: list[tuple], out: Path) -> str:
    """A self-contained page (figures embedded as data URIs): MLflow's artifact view
    renders it inline, and it opens from disk without its folder."""

    def inline(text: str) -> str:  # the little markdown the summary uses: **bold**, `code`
        parts = html.escape(text).split("**")
        text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        parts = text.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{inline(rest[0])}</p>")
        elif kind == "figure":
            name, caption = rest
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        elif kind == "table":
            head, rows = rest
            body.append(
                "<table><thead><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + "</tr></thead><tbody>"
                + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</tbody></table>"
            )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(f.experiment)}: rnnlab report</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def log_to_parent(tracking_uri: str, f: Frames, out: Path, ui: str | None = None) -> bool:
    """Attach the report to the sweep run of the drawn grid, so the UI shows it: the
    figures, report.html (rendered inline by the artifact view, figures embedded) and a
    report.md whose images are the run's own artifacts as served by the UI at ``ui``
    (MLflow's markdown view shows only absolute http(s) images)."""
    if f.parent_run_id is None:
        return False
    md = (out / "report.md").read_text()
    base = (ui or ui_base(tracking_uri)).rstrip("/")
    for png in out.glob("*.png"):  # ![caption](x.png) → the artifact URL the UI serves
        url = f"{base}/get-artifact?path=report%2F{png.name}&run_uuid={f.parent_run_id}"
        md = md.replace(f"]({png.name})", f"]({url})")
    MlflowTracker(tracking_uri).attach_report(f.parent_run_id, out, md)
    return True
