"""Compressed video files: writing H.264 with a chosen keyframe interval, reading frames by index.

Lecture: "Llama 3.2 - Video processing" takes "up to 64 uniformly sampled frames from a full
video". A video file does not store 64 pictures you can pick from, though. An H.264 stream stores a
few **keyframes** (I-frames, complete pictures) and, between them, frames stored as *differences*
from their neighbours (P- and B-frames). The run from one keyframe to the next is a GOP (group of
pictures); its length is the **keyframe interval** (the encoder's ``keyint`` / ``gop_size``).

    frame      0  1  2  3  4  5  6  7  8  9 10 11 12 13 ...
    type       I  B  B  P  B  B  P  B  B  P  B  B  I  B  ...   (keyframe interval 12)

To show frame 10 a decoder must start at keyframe 0 and decode frames 0..10: **seeking is not
free**. Its cost is a jump to the keyframe (the container's index says where it is) plus every frame
from there to the target. So reading a handful of frames can be done three ways:

    (a) decode every frame and convert every one to RGB, then pick          (read_all_frames)
    (b) decode every frame, convert only the wanted ones                     (strategy="decode_all")
    (c) for each wanted frame, seek to the keyframe before it, decode up to it   (strategy="seek")

(c) wins when keyframes are close together and wanted frames far apart; (b) when keyframes are
rare (every seek lands far back and re-decodes the same frames). ``strategy="auto"`` plans with
:func:`plan_reads`: it walks through the wanted frames and seeks only when the jump skips more frames
than a seek costs, which is never much slower than the better of the two.

Files are written and read with PyAV (Python bindings of FFmpeg; libx264 encodes). Frames are
``(T, C, H, W)`` float32 in [0, 1], like the course's images (``shapes_data``), so they go straight
into an image encoder.

Reference: ITU-T H.264 (2003), sections 3.62 (IDR picture) and 8.2.1; FFmpeg's ``av_seek_frame``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import av
import numpy as np
import torch

# A seek (jump in the file, flush the decoder, restart it) costs about as much as decoding this many
# small frames; measured with benchmarks/video.py on 224 x 224 clips. Seeking pays off only when it
# skips more frames than this.
SEEK_COST_FRAMES = 4

Strategy = Literal["auto", "decode_all", "seek"]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's headers and index say, read without decoding a single frame."""

    path: Path  # the file
    num_frames: int  # T, frames in the video stream
    fps: Fraction  # frames per second (exact, e.g. 24 or 30000/1001)
    width: int  # W in pixels
    height: int  # H in pixels
    codec: str  # e.g. "h264"
    keyframes: tuple[int, ...]  # indices of the keyframes, increasing; always starts with 0

    @property
    def duration(self) -> float:
        """Length in seconds, ``num_frames / fps``."""
        return float(self.num_frames / self.fps)


@dataclass(frozen=True)
class ReadRun:
    """One stretch of decoding: optionally seek, then decode forward through ``targets``."""

    seek: bool  # jump to the keyframe before targets[0] first (else continue where decoding stands)
    first_decoded: int  # the first frame this run decodes (a keyframe after a seek)
    targets: tuple[int, ...]  # the wanted frames it reaches, increasing

    @property
    def frames_decoded(self) -> int:
        return self.targets[-1] - self.first_decoded + 1


def write_video(path: str | Path, frames: torch.Tensor, fps: int = 24, keyframe_interval: int = 12,
                crf: int = 12) -> Path:
    """Encode frames as an H.264 mp4 with a keyframe exactly every ``keyframe_interval`` frames.

    Args:
        path: the ``.mp4`` file to write (its folder must exist).
        frames: ``(T, C, H, W)`` with C = 3, float in [0, 1] or uint8; H and W even (H.264 stores
            colour at half resolution, 4:2:0).
        fps: frames per second.
        keyframe_interval: frames from one keyframe to the next (x264 ``keyint``; scene-cut
            detection is turned off so that the interval is exact).
        crf: x264 quality, 0 (best) to 51 (worst); 12 keeps small synthetic frames crisp.

    Returns:
        The path written.

    Example:
        >>> write_video("clip.mp4", torch.rand(48, 3, 32, 32), fps=24, keyframe_interval=12)  # doctest: +SKIP
    """
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor (T, C, H, W), got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T, 3, H, W), got {tuple(frames.shape)}"
                         + ("; for one image add a time axis with frames.unsqueeze(0)" if frames.dim() == 3 else ""))
    T, C, H, W = frames.shape
    if T == 0:
        raise ValueError("frames is empty (T = 0); a video needs at least one frame")
    if H % 2 or W % 2:
        raise ValueError(f"H.264 (4:2:0) needs an even height and width, got {H} x {W}; "
                         f"crop or pad to {H + H % 2} x {W + W % 2}")
    for name, value in (("fps", fps), ("keyframe_interval", keyframe_interval)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if frames.dtype != torch.uint8:
        frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = frames.permute(0, 2, 3, 1).contiguous().numpy()  # (T, H, W, C): files store channels last
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = keyframe_interval
        stream.options = {"crf": str(crf),
                          "x264-params": f"keyint={keyframe_interval}:min-keyint={keyframe_interval}:scenecut=0"}
        for index in range(T):
            frame = av.VideoFrame.from_ndarray(pixels[index], format="rgb24")
            for packet in stream.encode(frame):  # the encoder may hold frames back (B-frames)
                container.mux(packet)
        for packet in stream.encode():  # flush what it held back
            container.mux(packet)
    return path


def _open(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` for reading, turning FFmpeg's errors into messages that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no video file at {path}; check the path (write one with write_video)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), a zero-length video (an interrupted download or "
                         "write?); create it again")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(f"{path} is not a video file FFmpeg can read, or it is truncated ({error}); "
                         "pass an .mp4/.mkv/.webm/.avi file") from None
    if not container.streams.video:
        streams = [stream.type for stream in container.streams]
        container.close()
        if not streams:
            raise ValueError(f"{path} holds no streams at all, a zero-length video; write at least one frame")
        raise ValueError(f"{path} has no video stream, only {', '.join(streams)}; pass a video file")
    return container


def _info(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
    # An mp4's index lists every packet in decode order, flagging keyframes. In a closed GOP every
    # frame decoded before a keyframe is also shown before it, so a keyframe's position in the index
    # is its frame number.
    entries = stream.index_entries
    if stream.frames and len(entries) == stream.frames:
        is_keyframe = [entry.is_keyframe for entry in entries]
    else:  # mkv, webm, ...: no complete index; read the packets instead, still without decoding them
        is_keyframe = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
        container.seek(0)  # back to the start for whoever decodes next
    keyframes = [index for index, key in enumerate(is_keyframe) if key]
    num_frames = len(is_keyframe)
    if num_frames == 0:
        raise ValueError(f"{path} has a video stream with no frames (zero-length video); "
                         "write at least one frame")
    if fps <= 0:
        raise ValueError(f"{path} does not say its frame rate; re-encode it with a fixed fps")
    return VideoInfo(path, num_frames, fps, stream.width, stream.height, stream.codec_context.name,
                     tuple(keyframes) if keyframes and keyframes[0] == 0 else (0, *keyframes))


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, frame rate, size and keyframe positions of a video file, without decoding it.

    Raises ``ValueError`` naming the file if it is missing, not a video, or has no frames.
    """
    with _open(path) as container:
        return _info(container, Path(path))


def check_indices(indices: Sequence[int], num_frames: int, path: str | Path = "the video") -> list[int]:
    """``indices`` as a list of ints, after checking each is a frame of a ``num_frames``-frame video."""
    if isinstance(indices, torch.Tensor | np.ndarray):
        indices = indices.tolist()
    if isinstance(indices, int) or not isinstance(indices, Sequence):
        raise TypeError(f"indices must be a sequence of ints, e.g. [0, 10, 20], got {indices!r}")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise TypeError(f"indices must be ints, got {list(indices)!r}")
    if len(indices) == 0:
        raise ValueError("indices is empty; ask for at least one frame, e.g. sample_frame_indices(num_frames)")
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise ValueError(f"frame indices {bad[:8]} are out of range for {path}, which has {num_frames} "
                         f"frames (valid: 0 .. {num_frames - 1}); sample with sample_frame_indices({num_frames})")
    return list(indices)


def plan_reads(wanted: Sequence[int], keyframes: Sequence[int], strategy: Strategy = "auto",
               seek_cost_frames: int = SEEK_COST_FRAMES) -> list[ReadRun]:
    """Decide where to seek and what to decode to reach the ``wanted`` frames.

    The cost of a plan, in units of one decoded frame, is

        cost = sum over runs of (targets[-1] - first_decoded + 1)  +  seek_cost_frames * (number of seeks)

    ``"decode_all"``: one run from frame 0, no seek. ``"seek"``: one seek per wanted frame.
    ``"auto"``: greedy; from the frame decoded last, seek to the keyframe before the next wanted frame
    only if that skips more than ``seek_cost_frames`` frames, else keep decoding forward.

    Args:
        wanted: the frames to reach, strictly increasing.
        keyframes: keyframe indices of the video, increasing, starting with 0.
        strategy: ``"auto"``, ``"decode_all"`` or ``"seek"``.
        seek_cost_frames: what a seek costs, in decoded frames.

    Returns:
        The runs, in order.

    Example:
        >>> [run.first_decoded for run in plan_reads([5, 30, 31], keyframes=range(0, 40, 10))]
        [0, 30]
    """
    if strategy not in ("auto", "decode_all", "seek"):
        raise ValueError(f"unknown strategy {strategy!r}; choose 'auto', 'decode_all' or 'seek'")
    keyframes = np.asarray(keyframes)
    runs: list[ReadRun] = []
    last_decoded = -1  # nothing decoded yet: the decoder stands before frame 0
    for target in wanted:
        keyframe = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
        skippable = keyframe - (last_decoded + 1)  # frames a seek would save us decoding
        keep_going = strategy == "decode_all" or (strategy == "auto" and skippable <= seek_cost_frames)
        if keep_going and runs:
            runs[-1] = ReadRun(runs[-1].seek, runs[-1].first_decoded, (*runs[-1].targets, target))
        elif keep_going:  # the first run: decode from the start of the file, no seek needed
            runs.append(ReadRun(False, 0, (target,)))
        else:
            runs.append(ReadRun(True, keyframe, (target,)))
        last_decoded = target
    return runs


def plan_cost(runs: Sequence[ReadRun], seek_cost_frames: int = SEEK_COST_FRAMES) -> int:
    """The estimated cost of a plan in decoded frames (see :func:`plan_reads`)."""
    return sum(run.frames_decoded for run in runs) + seek_cost_frames * sum(run.seek for run in runs)


def _frame_index(frame: av.VideoFrame, start_pts: int, pts_per_frame: Fraction) -> int:
    return round((frame.pts - start_pts) / pts_per_frame)


def _decode_run(container, stream, run: ReadRun, start_pts: int, pts_per_frame: Fraction,
                path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, (H, W, C) uint8 RGB)`` for each target of ``run``; decoded-only frames are skipped."""
    if run.seek:  # FFmpeg jumps to the keyframe at or before this time (backward=True)
        container.seek(int(start_pts + run.targets[0] * pts_per_frame), stream=stream, backward=True)
    targets = iter(run.targets)
    target = next(targets)
    for frame in container.decode(stream):
        index = _frame_index(frame, start_pts, pts_per_frame)
        if index < target:
            continue  # decoded (we had to), but never converted to RGB: that is strategy (b)'s saving
        if index > target:
            raise ValueError(f"{path}: frame {target} was skipped while decoding (landed on {index}); "
                             "the file's index may be broken, re-encode it")
        yield index, frame.to_ndarray(format="rgb24")  # YUV 4:2:0 -> RGB, the conversion step
        target = next(targets, None)
        if target is None:
            return
    raise ValueError(f"{path} ended before frame {target}; its header overstates the frame count, re-encode it")


def read_frames(path: str | Path, indices: Sequence[int], strategy: Strategy = "auto",
                seek_cost_frames: int = SEEK_COST_FRAMES) -> torch.Tensor:
    """Decode the frames at ``indices`` from a video file.

    Args:
        path: a video file (mp4, mkv, ...).
        indices: frame numbers, any order, repeats allowed, each in ``[0, num_frames)``.
        strategy: how to reach them (see the module docstring and :func:`plan_reads`).
        seek_cost_frames: what one seek costs, in decoded frames, for ``"auto"``'s plan.

    Returns:
        ``(T, C, H, W)`` float32 in [0, 1], frame ``t`` being ``indices[t]``.

    Example:
        >>> read_frames("clip.mp4", sample_frame_indices(240, 8)).shape  # doctest: +SKIP
        torch.Size([8, 3, 32, 32])
    """
    path = Path(path)
    with _open(path) as container:
        info = _info(container, path)
        indices = check_indices(indices, info.num_frames, path)
        stream = container.streams.video[0]
        start_pts = stream.start_time or 0
        pts_per_frame = 1 / (stream.time_base * info.fps)  # timestamp ticks per frame
        runs = plan_reads(sorted(set(indices)), info.keyframes, strategy, seek_cost_frames)
        decoded: dict[int, np.ndarray] = {}
        for run in runs:
            decoded.update(_decode_run(container, stream, run, start_pts, pts_per_frame, path))
    pixels = np.stack([decoded[index] for index in indices])  # (T, H, W, C) uint8
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255  # (T, C, H, W) in [0, 1]


def read_all_frames(path: str | Path) -> torch.Tensor:
    """Decode and convert every frame: strategy (a), simple and the slowest for a few frames.

    Returns:
        ``(T, C, H, W)`` float32 in [0, 1], all ``T`` frames of the video.
    """
    path = Path(path)
    with _open(path) as container:
        _info(container, path)  # the same errors as read_frames for empty or broken files
        pixels = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])  # (T, H, W, C)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255  # (T, C, H, W)
