"""The README's quickstart command, shortened: `vlmrm fit --config configs/quickstart.yaml`
with the embedded tiny VLM, offline, through the installed `vlmrm` entry point."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quickstart_runs_offline_and_reports_its_run_directory(tmp_path):
    overlay = tmp_path / "csv.yaml"
    overlay.write_text(
        "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        "      init_args: {save_dir: runs}\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("VLMRM_RUN_DIR", None)
    result = subprocess.run(
        [
            sys.executable, "-m", "vlmrm.cli", "fit",
            "--config", str(REPO / "configs" / "quickstart.yaml"),
            "--config", str(overlay),
            "--data.total_frames", "400",
            "--data.learning_starts", "200",
            "--evaluation.episodes", "1",
            "--trainer.enable_progress_bar", "false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "quickstart").iterdir()
    assert f"run directory {Path('runs') / 'quickstart' / run_dir.name}" in result.stderr
    assert (run_dir / "videos" / "env_steps=400.mp4").is_file()
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    rows = [r for r in rows if r.get("val/success_rate")]
    assert rows and 0.0 <= float(rows[-1]["val/success_rate"]) <= 1.0
