"""The report card's plots: PNG files beside `report.md`, drawn with matplotlib's Agg canvas (no display).

    plot-<stage>-loss.png         training loss (and its smoothed line) and validation bits per byte by step;
                                  for RL, the mean reward and pass@k
    plot-<stage>-throughput.png   tokens per second and MFU by step
    plot-accuracy.png             accuracy per task for every chat evaluation stage

matplotlib is imported here only, at the first figure (a run with no curves never imports it), so
`import nanochat` and the CLI stay fast. Plots no longer backed by metrics are removed on the next draw.
"""
import io
from pathlib import Path

from nanochat.atomic import atomic_write_bytes

PREFIX = "plot-"
# a model's source stage as the report card names it: the summary table's columns and the accuracy bars
SOURCE_LABELS = {"base": "BASE", "mid": "MID", "sft": "SFT", "rl": "RL"}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def draw(files, out_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Draw every plot the run's metrics allow; [(title, file name)] and notes about plots that failed."""
    drawn, notes = [], []

    def attempt(builder, size, filename: str, title: str, *args) -> None:
        try:
            fig = builder(lambda: _figure(size), *args)  # matplotlib is imported at the first figure only
            if fig is None:
                return
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            FigureCanvasAgg(fig)
            # fixed margins: tight_layout would measure every label first and cost a third of the time
            fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=100)
            atomic_write_bytes(out_dir / filename, png.getvalue())  # a reader never sees half a picture
            drawn.append((title, filename))
        except ImportError as exc:
            note = f"no plots: matplotlib could not be imported ({exc}); `pip install matplotlib`"
            if note not in notes:
                notes.append(note)
        except Exception as exc:  # noqa: BLE001 — one odd metrics file costs one plot, not the report
            notes.append(f"the plot {title!r} could not be drawn: {type(exc).__name__}: {exc}")

    for entry in files.stages:
        name, records = entry["name"], files.metrics.get(entry["name"], [])
        attempt(_loss, (10, 3.6), f"{PREFIX}{name}-loss.png", f"{name}: loss", name, records)
        attempt(_throughput, (10, 3.6), f"{PREFIX}{name}-throughput.png", f"{name}: throughput", name, records)
    attempt(_accuracy, (10, 4), f"{PREFIX}accuracy.png", "accuracy per task and stage", files)

    kept = {filename for _, filename in drawn}
    for stale in out_dir.glob(f"{PREFIX}*.png"):
        if stale.name not in kept:
            stale.unlink(missing_ok=True)
    return drawn, notes


def _figure(size):
    from matplotlib.figure import Figure
    return Figure(figsize=size)


def _series(records, key) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get("step"), (int, float)) and isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _panel(ax, records, keys, ylabel, title):
    plotted = False
    for color, key in zip(COLORS, keys):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, color=color, label=key, marker="." if len(xs) < 30 else None,
                    linewidth=1.0 if key in ("loss", "tok_per_s") else 1.6,
                    alpha=0.45 if key == "loss" and any("smooth_loss" in r for r in records) else 1.0)
            plotted = True
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    return plotted


def _loss(new_figure, name, records):
    if any("reward" in r for r in records):  # RL: no loss, but a reward and pass@k
        passes = sorted({k for r in records for k in r if k.startswith("pass@")}, key=lambda k: int(k[5:]))
        fig = new_figure()
        left, right = fig.subplots(1, 2)
        _panel(left, records, ["reward"], "mean reward", f"{name}: reward")
        _panel(right, records, passes, "pass@k", f"{name}: evaluation")
        return fig
    if not any("loss" in r for r in records):
        return None
    fig = new_figure()
    left, right = fig.subplots(1, 2)
    _panel(left, records, ["loss", "smooth_loss"], "loss", f"{name}: training loss")
    _panel(right, records, ["val_bpb"], "bits per byte", f"{name}: validation bpb")
    return fig


def _throughput(new_figure, name, records):
    records = [dict(r, tok_per_s=r["tokens"] / (r["dt_ms"] / 1000))
               if "tok_per_s" not in r and isinstance(r.get("tokens"), (int, float)) and r.get("dt_ms") else r
               for r in records]  # RL records tokens and time per step
    if not any(isinstance(r.get("tok_per_s"), (int, float)) for r in records):
        return None
    fig = new_figure()
    left, right = fig.subplots(1, 2)
    _panel(left, records, ["tok_per_s"], "tokens / s", f"{name}: throughput")
    records = [dict(r, mfu=100 * r["mfu"]) if isinstance(r.get("mfu"), (int, float)) else r for r in records]
    if not _panel(right, records, ["mfu"], "MFU %", f"{name}: model FLOPs utilisation"):
        right.texts[-1].set_text("no MFU: this device has no known peak FLOP/s")
    return fig


def _accuracy(new_figure, files):
    bars = {}  # stage -> {task: accuracy}
    for entry in files.stages:
        if entry.get("stage") != "chat-eval":
            continue
        scores = {m["task"]: m["accuracy"] for m in files.metrics.get(entry["name"], [])
                  if "task" in m and isinstance(m.get("accuracy"), (int, float))}
        if scores:
            source = (entry.get("settings") or {}).get("source", "")
            bars[f"{entry['name']} ({SOURCE_LABELS.get(source, source)})"] = scores
    if not bars:
        return None
    tasks = list(dict.fromkeys(t for scores in bars.values() for t in scores))
    fig = new_figure()
    ax = fig.subplots()
    width = 0.8 / len(bars)
    for i, (label, scores) in enumerate(bars.items()):
        xs = [t + (i - (len(bars) - 1) / 2) * width for t in range(len(tasks))]
        bars_drawn = ax.bar(xs, [scores.get(t, 0.0) for t in tasks], width, label=label, color=COLORS[i % len(COLORS)])
        ax.bar_label(bars_drawn, labels=[f"{scores[t]:.2f}" if t in scores else "" for t in tasks], fontsize=7)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy per task and stage")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
