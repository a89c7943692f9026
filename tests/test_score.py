"""`vlmrm score` on image files, folders and videos, with CSV and plot output."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

from vlmrm.cli import main


def write_images(folder, count: int, size: int = 40) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i:02d}.png"
        iio.imwrite(path, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def write_video(path, frames: int, size: int = 32) -> None:
    writer = imageio_ffmpeg.write_frames(str(path), (size, size), fps=10, macro_block_size=1)
    writer.send(None)
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.send(rng.integers(0, 256, (size, size, 3), dtype=np.uint8).tobytes())
    writer.close()


def test_scores_folder_file_and_video(tiny_clip, tmp_path, capsys):
    name, checkpoint = tiny_clip
    images = write_images(tmp_path / "frames", 3)
    single = write_images(tmp_path / "other", 1, size=56)[0]  # a different size: its own batch
    video = tmp_path / "clip.mp4"
    write_video(video, frames=5)
    csv_path, plot_path = tmp_path / "scores.csv", tmp_path / "scores.png"
    code = main(
        [
            "score", str(tmp_path / "frames"), str(single), str(video),
            "--model", name, "--pretrained", checkpoint,
            "--goal", "a cat", "--goal", "a kitten", "--baseline", "an animal",
            "--alpha", "0.5", "--batch-size", "2",
            "--csv", str(csv_path), "--plot", str(plot_path),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "frame_00.png" in out and "clip.mp4#4" in out and "9 frames" in out
    with csv_path.open() as file:
        rows = list(csv.DictReader(file))
    assert [row["frame"] for row in rows[:3]] == [p.name for p in images]
    assert len(rows) == 9 and all(np.isfinite(float(row["reward"])) for row in rows)
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [(b"not an image", ".png", "Cannot read image"), (b"not a video", ".mp4", "Cannot read video")],
)
def test_unreadable_files_are_one_clear_error(
    tiny_clip, tmp_path, capsys, content, suffix, message
):
    name, checkpoint = tiny_clip
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    code = main(["score", str(bad), "--model", name, "--pretrained", checkpoint, "--goal", "a cat"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_path_and_bad_alpha(tiny_clip, tmp_path, capsys):
    name, checkpoint = tiny_clip
    args = ["--model", name, "--pretrained", checkpoint, "--goal", "a cat"]
    assert main(["score", str(tmp_path / "missing.png"), *args]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
    write_images(tmp_path / "frames", 1)
    assert main(["score", str(tmp_path / "frames"), *args, "--alpha", "2"]) == 2
    assert "alpha=2.0 is outside [0, 1]" in capsys.readouterr().err
