"""Row 1 of the peers benchmark as a PNG: wall ms, CPU ms and WAL KB per leaf against document size.

    python -m bench.peers.plot peers.json docs/peers-step-cost.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

LABELS = {"lace": "LACE", "langgraph-state": "LangGraph, document in state (operator.add)",
          "langgraph-delta": "LangGraph, DeltaChannel (beta), durability=sync", "dbos": "DBOS, one step per leaf"}
STYLE = {"lace": ("tab:blue", "o"), "langgraph-state": ("tab:red", "s"), "langgraph-delta": ("tab:orange", "D"),
         "dbos": ("tab:green", "^")}


def plot(report: dict[str, Any], out: Path) -> None:
    panels = [("wall_ms", "wall ms per leaf", 1.0), ("cpu_ms", "CPU ms per leaf (writer process)", 1.0),
              ("pg_cpu_ms", "Postgres CPU ms per leaf", 1.0), ("wal_bytes", "WAL KB per leaf", 1 / 1024)]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4.8))
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        for system, result in report["results"].items():
            points = sorted((int(n), c[key] * scale) for n, c in result["cost"].items() if c[key] > 0)
            if not points:
                continue
            color, marker = STYLE.get(system, ("black", "x"))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, color=color,
                    label=LABELS.get(system, system))
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = [int(n) for n in report["sizes"]]
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set_xlabel("leaves in the document (800 words each)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    v = report.get("versions", {})
    fig.suptitle("Durable step cost as the document grows (0 ms per LLM call, sequential writes, one PostgreSQL) — "
                 f"langgraph {v.get('langgraph', '?')}, langgraph-checkpoint-postgres "
                 f"{v.get('langgraph-checkpoint-postgres', '?')}, dbos {v.get('dbos', '?')}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
