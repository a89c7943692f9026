"""Read images and videos as uint8 frames ``[H, W, 3]`` (one clear error per bad file), and
write mp4 videos and PNG figures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vlmrm.errors import InputFileError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "collect_media_files",
    "pyplot",
    "read_frames",
    "save_figure",
    "write_video",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def collect_media_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders into their images and videos (sorted); keep files as given."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
            )
            if not found:
                raise InputFileError(
                    f"Folder {str(path)!r} holds no images or videos "
                    f"(looked for {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})."
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(
                f"{str(path)!r} is neither a file nor a folder; give image files, folders of "
                "images, or video files."
            )
    return files


def read_frames(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(label, frame)`` for an image (one frame) or a video (every frame).

    Frames are uint8 ``[H, W, 3]``; labels are the file name, plus ``#index`` for video frames.
    """
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        yield from _read_video(path)
    else:
        yield path.name, _read_image(path)


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        image = np.asarray(iio.imread(path))
    except Exception as error:
        detail = _first_line(error)
        detail = "" if str(path) in detail else f" ({detail})"  # imageio repeats the path
        raise InputFileError(
            f"Cannot read image {str(path)!r}: no image decoder recognises it{detail}; it is "
            "damaged, incomplete or not an image. Convert it to PNG or JPEG, or leave it out."
        ) from error
    if image.ndim == 2:  # greyscale
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputFileError(
            f"Image {str(path)!r} has shape {image.shape}; "
            "expected [H, W, 3] RGB or [H, W, 4] RGBA. Convert it to an RGB PNG."
        )
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            raise InputFileError(
                f"Image {str(path)!r} has dtype {image.dtype}; expected 8-bit RGB. "
                "Convert it to an 8-bit RGB PNG."
            )
    return np.ascontiguousarray(image[..., :3])


def _read_video(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
    except Exception as error:
        raise InputFileError(
            f"Cannot read video {str(path)!r} ({_first_line(error)}); is it a complete video "
            "file that ffmpeg can decode? Re-encode it (e.g. to H.264 mp4), or leave it out."
        ) from error
    index = 0
    try:
        for buffer in reader:
            frame = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
            yield f"{path.name}#{index}", frame
            index += 1
    except Exception as error:
        raise InputFileError(
            f"Cannot read video {str(path)!r} after {index} frames ({_first_line(error)}); "
            "the file may be truncated. Re-encode it, or leave it out."
        ) from error
    finally:
        reader.close()
    if index == 0:
        raise InputFileError(f"Video {str(path)!r} has no frames; leave it out.")


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (decoders' messages run to many lines)."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


def write_video(path: str | Path, frames: np.ndarray, fps: float = 30.0) -> Path:
    """Write ``frames`` (uint8 ``[T, H, W, 3]``) as an H.264 mp4 that browsers and players open.

    Odd frame sizes are padded by one black row or column (H.264 with yuv420p needs even
    sizes). The file is written under a temporary name and renamed, so a reader never sees a
    half-written video.
    """
    import imageio_ffmpeg

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(
            f"write_video needs uint8 frames [T, H, W, 3] with T > 0, got {frames.dtype} "
            f"{list(frames.shape)}."
        )
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(temporary),
        (frames.shape[2], frames.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-movflags", "+faststart"],
    )
    writer.send(None)  # start the encoder
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    temporary.replace(path)
    return path


def pyplot():
    """``matplotlib.pyplot`` for drawing into files: the Agg backend unless one is already in
    use (a notebook keeps its own), so no window ever opens."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay out ``figure``, write it to ``path`` (PNG; parent folders created) and close it."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path
