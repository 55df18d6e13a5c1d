"""Decode video files to RGB arrays with PyAV (FFmpeg)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

__all__ = ["read_video", "video_info"]


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video file {str(path)!r} does not exist")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot open video {str(path)!r}: {err}") from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"{str(path)!r} has no video stream")
    return container


def read_video(
    path: str | Path,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a video's frames as RGB.

    Args:
        path: a file FFmpeg can read (mp4, mkv, avi, ...); the first video stream is used.
        max_frames: stop after this many frames are *returned* (after `stride`); None reads
            to the end.
        stride: keep every `stride`-th decoded frame, starting with the first.
        size: (height, width) in pixels to resize every frame to (FFmpeg's swscale, area
            averaging, so downscaling does not alias); None keeps the stored size.

    Returns:
        uint8 [T, H, W, 3], RGB, in presentation order.

    Raises:
        ValueError: the file is missing, corrupt, has no video stream or no frame.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with both >= 1, got {size}")
    frames: list[np.ndarray] = []
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; decode order is unchanged
        for i, frame in enumerate(container.decode(stream)):
            if i % stride:
                continue
            if size is not None:
                frame = frame.reformat(
                    width=size[1], height=size[0], format="rgb24", interpolation="AREA"
                )
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode video {str(path)!r}: {err}") from err
    finally:
        container.close()
    if not frames:
        raise ValueError(f"video {str(path)!r} decoded to no frame")
    return np.stack(frames)


def video_info(path: str | Path) -> dict:
    """What a video holds, without decoding its pictures.

    Returns:
        dict(frames=int, fps=float, height=int, width=int). `frames` is the container's
        count, or the number of video packets when the container does not store one.

    Raises:
        ValueError: the file is missing, corrupt or has no video stream.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frames = stream.frames
        if not frames:
            # some containers (mkv, raw streams) store no count: count packets instead
            frames = sum(1 for p in container.demux(stream) if p.size)
        rate = stream.average_rate or stream.guessed_rate
        return {
            "frames": int(frames),
            "fps": float(rate) if rate else 0.0,
            "height": int(stream.codec_context.height),
            "width": int(stream.codec_context.width),
        }
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {str(path)!r}: {err}") from err
    finally:
        container.close()
