"""Run-folder logs and clean stopping: metrics.jsonl + rich console lines, and SIGTERM/SIGINT handling.

    reporter = Reporter(cfg, enabled=ctx.is_main)
    reporter.write({"step": 10, "split": "train", "loss": 0.5, ...})     # one JSON line (+ a console line)
    with StopFlag() as stop:
        ...; if stop.signal is not None: checkpoint and leave
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

METRICS = "metrics.jsonl"


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):  # a line cut short by a kill
        return None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from (they will be written again), and any
    line a kill cut short."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if (s := _step_of(ln)) is not None and s <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


class Reporter:
    """metrics.jsonl lines and a console line (rich); rank 0 only."""

    def __init__(self, cfg, enabled: bool):  # cfg: TrainConfig (out, quiet, steps)
        self.enabled, self.quiet, self.total = enabled, cfg.quiet, cfg.steps
        self.path = Path(cfg.out) / METRICS
        self.console = None
        if enabled and not cfg.quiet:
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)  # one line per record, also in logs

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.console is not None:
            r = record
            if r["split"] == "train":
                self.console.print(
                    f"[bold]step {r['step']:>6}/{self.total}[/] loss {r['loss']:.4f}  l1 {r['l1']:.4f}  "
                    f"feat {r['feature']:.4f}  conf {r['conf']:.3f}  psnr {r['psnr_target']:.2f}  "
                    f"lr {r['lr']:.2e}  |g| {r['grad_norm']:.2f}  {r['pairs_per_s']:.2f} pairs/s  "
                    f"eta {r['eta_min']:.1f} min")
            else:
                self.console.print(f"[cyan]{r['split']} @ {r['step']}[/]  loss {r['loss']:.4f}  "
                                   f"psnr(target) {r['psnr_target']:.2f} dB  regr {r['regr']:.4f}")

    def note(self, text: str) -> None:
        if self.enabled and self.console is not None:
            self.console.print(text)


class StopFlag:
    """Set by SIGTERM / SIGINT (only installed from the main thread); the loop checkpoints and exits."""

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
