"""Tests for course_lib.video, video_io and video_clips: sampling, real H.264 files, the Perceiver resampler.

Three kinds, as everywhere: shapes, agreement with a reference (NumPy's float formula, PyTorch's
scaled_dot_product_attention, decoding every frame), invariants (order-blindness without time
embeddings, masking), and the bad inputs a student will meet.
"""

import math

import av
import numpy as np
import pytest
import torch
from torch import nn

from course_lib.video import (PerceiverAttention, PerceiverResampler, ResamplerConfig, TemporalAggregator,
                              sample_frame_indices, sample_frame_indices_fixed_fps, sample_frame_indices_random)
from course_lib.video_clips import (DIRECTIONS, MovingShape, VideoClassifier, encode_frames, make_demo_clip,
                                    make_direction_dataset, render_clip, single_frame_features, train_classifier)
from course_lib.video_io import (plan_cost, plan_reads, probe_video, read_all_frames, read_frames,
                                 write_video)

torch.manual_seed(0)

# ------------------------------------------------------------------------------------------------
# Frame sampling

SIZES = [(1, 1), (1, 64), (10, 64), (63, 64), (64, 64), (65, 64), (100, 4), (240, 64), (601, 64), (1000, 7), (7, 3)]


@pytest.mark.parametrize("num_frames, num_samples", SIZES)
def test_uniform_count_range_and_order(num_frames, num_samples):
    indices = sample_frame_indices(num_frames, num_samples)
    assert isinstance(indices, list) and all(type(i) is int for i in indices)
    assert len(indices) == min(num_frames, num_samples)
    assert 0 <= indices[0] and indices[-1] < num_frames
    assert all(a < b for a, b in zip(indices, indices[1:]))


@pytest.mark.parametrize("num_frames, num_samples", [(65, 64), (100, 4), (240, 64), (601, 64), (1000, 7), (7, 3)])
def test_uniform_evenly_spread(num_frames, num_samples):
    indices = sample_frame_indices(num_frames, num_samples)
    gaps = set(np.diff(indices).tolist())
    assert gaps <= {num_frames // num_samples, math.ceil(num_frames / num_samples)}
    # Centred: the margins before the first and after the last sample differ by at most one frame.
    assert abs(indices[0] - (num_frames - 1 - indices[-1])) <= 1


@pytest.mark.parametrize("num_frames, num_samples", SIZES)
def test_uniform_equals_float_formula(num_frames, num_samples):
    if num_frames <= num_samples:
        expected = list(range(num_frames))
    else:
        expected = np.floor((np.arange(num_samples) + 0.5) * num_frames / num_samples).astype(int).tolist()
    assert sample_frame_indices(num_frames, num_samples) == expected


def test_uniform_examples_and_default():
    assert sample_frame_indices(100, 4) == [12, 37, 62, 87]
    assert sample_frame_indices(3) == [0, 1, 2]
    assert len(sample_frame_indices(10_000)) == 64


@pytest.mark.parametrize("args, error", [((0, 4), ValueError), ((-5, 4), ValueError), ((10, 0), ValueError),
                                         ((10, -1), ValueError), ((10.0, 4), TypeError), ((10, True), TypeError)])
def test_uniform_bad_counts(args, error):
    with pytest.raises(error, match="must be"):
        sample_frame_indices(*args)


def test_fixed_fps():
    assert sample_frame_indices_fixed_fps(100, video_fps=25, sample_fps=1) == [0, 25, 50, 75]
    indices = sample_frame_indices_fixed_fps(240, video_fps=24, sample_fps=2)  # 10 s at 2 frames a second
    assert len(indices) == 20 and set(np.diff(indices).tolist()) == {12}
    assert sample_frame_indices_fixed_fps(2400, 24, 2, max_samples=64) == sample_frame_indices(2400, 64)
    with pytest.raises(ValueError, match="sample_fps"):
        sample_frame_indices_fixed_fps(100, video_fps=25, sample_fps=30)


@pytest.mark.parametrize("num_frames, num_samples", [(240, 64), (100, 7), (64, 64), (5, 8)])
def test_random_per_segment(num_frames, num_samples):
    draw = sample_frame_indices_random(num_frames, num_samples, torch.Generator().manual_seed(1))
    assert draw == sample_frame_indices_random(num_frames, num_samples, torch.Generator().manual_seed(1))
    assert len(draw) == min(num_frames, num_samples)
    assert all(a < b for a, b in zip(draw, draw[1:])) and 0 <= draw[0] and draw[-1] < num_frames
    if num_frames > num_samples:  # one index inside each segment, as the uniform sampler's centres are
        borders = [i * num_frames // num_samples for i in range(num_samples + 1)]
        assert all(start <= index < end for index, start, end in zip(draw, borders, borders[1:]))
        other = sample_frame_indices_random(num_frames, num_samples, torch.Generator().manual_seed(2))
        assert other != draw or num_frames < 2 * num_samples


# ------------------------------------------------------------------------------------------------
# Real video files


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """24 frames of 32 x 32 moving shapes, written with a keyframe every 8 frames."""
    shapes = [MovingShape("circle", "red", "large", (0.2, 0.5), (0.6, 0.0)),
              MovingShape("cross", "blue", "small", (0.5, 0.2), (0.0, 0.5), appear=0.2)]
    frames = render_clip(shapes, [i / 24 for i in range(24)])  # (24, 3, 32, 32)
    path = write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=24, keyframe_interval=8)
    return path, frames


def test_probe(clip):
    path, frames = clip
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (24, 24, 32, 32, "h264")
    assert info.keyframes == (0, 8, 16) and info.duration == 1.0


def test_frames_read_back_within_codec_tolerance(clip):
    path, frames = clip
    decoded = read_frames(path, list(range(24)))
    assert decoded.shape == (24, 3, 32, 32) and decoded.dtype == torch.float32
    error = (decoded - frames).abs()
    assert error.mean() < 0.03  # lossy H.264 with colour at half resolution (4:2:0): edges bleed a little
    assert (error.mean(dim=(1, 2, 3)) < 0.05).all()
    # Every decoded frame is nearest to the frame written at its own index: no frame is shifted.
    distances = torch.cdist(decoded.flatten(1), frames.flatten(1))  # (24, 24)
    assert torch.equal(distances.argmin(dim=1), torch.arange(24))


@pytest.mark.parametrize("indices", [[0], [23], [5, 3, 5, 20, 9], [7, 8, 9, 15, 16], list(range(0, 24, 3))])
def test_strategies_agree(clip, indices):
    path, _ = clip
    reference = read_all_frames(path)[indices]  # decode and convert everything, then pick
    for strategy in ("auto", "decode_all", "seek"):
        assert torch.equal(read_frames(path, indices, strategy=strategy), reference), strategy


def test_matroska_without_a_full_index(clip, tmp_path):
    # An mkv's index lists only some packets: the frame count and keyframes come from the packets.
    _, frames = clip
    path = write_video(tmp_path / "clip.mkv", frames, fps=24, keyframe_interval=8)
    info = probe_video(path)
    assert (info.num_frames, info.keyframes) == (24, (0, 8, 16))
    reference = read_all_frames(path)
    for strategy in ("auto", "decode_all", "seek"):
        assert torch.equal(read_frames(path, [20, 2, 9], strategy=strategy), reference[[20, 2, 9]])


def test_uint8_input_and_indices_as_tensor(tmp_path):
    frames = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    path = write_video(tmp_path / "noise.mp4", frames, fps=6, keyframe_interval=3)
    assert read_frames(path, torch.tensor([1, 4])).shape == (2, 3, 16, 16)
    assert probe_video(path).keyframes == (0, 3)


def test_plan_reads():
    keyframes = list(range(0, 600, 12))
    wanted = sample_frame_indices(600, 64)
    decode_all, seek, auto = (plan_reads(wanted, keyframes, s) for s in ("decode_all", "seek", "auto"))
    assert len(decode_all) == 1 and not decode_all[0].seek and decode_all[0].targets == tuple(wanted)
    assert decode_all[0].frames_decoded == wanted[-1] + 1
    assert len(seek) == 64 and all(run.seek and run.first_decoded == 12 * (run.targets[0] // 12) for run in seek)
    assert [t for run in auto for t in run.targets] == wanted
    assert plan_cost(auto) <= min(plan_cost(decode_all), plan_cost(seek))
    # Rare keyframes: seeking back to keyframe 0 for every frame would be ruinous; auto decodes through.
    rare = plan_reads(wanted, [0, 250, 500], "auto")
    assert plan_cost(rare) <= plan_cost(plan_reads(wanted, [0, 250, 500], "decode_all"))
    assert plan_cost(plan_reads(wanted, [0, 250, 500], "seek")) > 10 * plan_cost(rare)
    with pytest.raises(ValueError, match="unknown strategy"):
        plan_reads(wanted, keyframes, "fastest")


def test_demo_clip_is_cached(tmp_path):
    path = make_demo_clip(num_frames=12, fps=12, keyframe_interval=6, folder=tmp_path)
    modified = path.stat().st_mtime_ns
    assert make_demo_clip(num_frames=12, fps=12, keyframe_interval=6, folder=tmp_path) == path
    assert path.stat().st_mtime_ns == modified
    assert probe_video(path).num_frames == 12


def test_bounce_stays_inside_and_appear_hides():
    ball = MovingShape("circle", "red", "large", (0.5, 0.5), (1.7, -2.3), bounce=True)
    positions = [ball.at(t / 10) for t in range(100)]
    assert all(0.15 - 1e-9 <= p.x <= 0.85 + 1e-9 and 0.15 - 1e-9 <= p.y <= 0.85 + 1e-9 for p in positions)
    late = MovingShape("square", "blue", "small", (0.5, 0.5), appear=1.0)
    assert late.at(0.99) is None and late.at(1.0) is not None


# ------------------------------------------------------------------------------------------------
# Bad input: errors that name the file or the values, and say what to do


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no video file at .*nowhere.mp4"):
        read_frames(tmp_path / "nowhere.mp4", [0])


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are lecture notes, not a video")
    with pytest.raises(ValueError, match="notes.mp4 is not a video file"):
        probe_video(path)


def test_zero_length_videos(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(ValueError, match="empty.mp4 is empty \\(0 bytes\\)"):
        read_frames(empty, [0])
    no_frames = tmp_path / "no_frames.mp4"
    with av.open(str(no_frames), mode="w") as container:  # a header, but not one frame
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(ValueError, match="no_frames.mp4 holds no streams at all, a zero-length video"):
        probe_video(no_frames)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(ValueError, match="sound.wav has no video stream, only audio"):
        probe_video(path)


def test_indices_out_of_range(clip):
    path, _ = clip
    with pytest.raises(ValueError, match=r"frame indices \[24, -1\] are out of range .*clip.mp4.* 24 frames"):
        read_frames(path, [0, 24, -1])
    with pytest.raises(ValueError, match="indices is empty"):
        read_frames(path, [])
    with pytest.raises(TypeError, match="must be ints"):
        read_frames(path, [1.5])
    with pytest.raises(TypeError, match="sequence of ints"):
        read_frames(path, 3)


def test_write_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even height and width, got 31 x 32; crop or pad to 32 x 32"):
        write_video(tmp_path / "odd.mp4", torch.rand(2, 3, 31, 32))
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\), got \(3, 32, 32\); .*unsqueeze\(0\)"):
        write_video(tmp_path / "one.mp4", torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="keyframe_interval must be a positive int"):
        write_video(tmp_path / "k.mp4", torch.rand(2, 3, 32, 32), keyframe_interval=0)


# ------------------------------------------------------------------------------------------------
# The Perceiver resampler and the temporal aggregator

CONFIG = ResamplerConfig(dim=16, num_latents=3, num_layers=2, num_heads=2, head_dim=8, max_frames=32)


@pytest.mark.parametrize("shape", [(2, 1, 16), (2, 5, 16), (1, 32, 16), (2, 4, 3, 16), (3, 32, 7, 16)])
def test_resampler_shapes(shape):
    assert PerceiverResampler(CONFIG)(torch.randn(*shape)).shape == (shape[0], 3, 16)


@pytest.mark.parametrize("T, groups", [(1, 1), (31, 1), (32, 1), (33, 2), (64, 2), (100, 4)])
def test_aggregator_shapes(T, groups):
    assert TemporalAggregator(CONFIG)(torch.randn(2, T, 16)).shape == (2, groups, 3, 16)
    assert TemporalAggregator(CONFIG, frames_per_group=16)(torch.randn(1, T, 4, 16)).shape == (1, math.ceil(T / 16), 3, 16)


def test_attention_equals_scaled_dot_product_attention():
    attention = PerceiverAttention(CONFIG)
    latents, media = torch.randn(2, 3, 16), torch.randn(2, 10, 16)
    mask = torch.rand(2, 10) > 0.3
    q = attention.to_q(attention.norm_latents(latents))
    k, v = attention.to_kv(torch.cat([attention.norm_media(media), attention.norm_latents(latents)], 1)).chunk(2, -1)
    q, k, v = (x.unflatten(-1, (2, 8)).transpose(1, 2) for x in (q, k, v))  # (B, h, n, d)
    keep = torch.cat([mask, torch.ones(2, 3, dtype=torch.bool)], 1)[:, None, None, :]
    expected = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, h, L, d)
    expected = attention.to_out(expected.transpose(1, 2).flatten(2))
    torch.testing.assert_close(attention(latents, media, mask), expected)


def test_order_blind_without_time_embeddings_and_not_with():
    media, order = torch.randn(2, 12, 16), torch.randperm(12)
    blind = PerceiverResampler(ResamplerConfig(**{**CONFIG.__dict__, "time_embeddings": False}))
    torch.testing.assert_close(blind(media), blind(media[:, order]))
    timed = PerceiverResampler(CONFIG)
    assert not torch.allclose(timed(media), timed(media[:, order]))


def test_aggregator_groups_are_independent_and_padding_ignored():
    aggregator = TemporalAggregator(CONFIG)
    features = torch.randn(2, 40, 16)
    out = aggregator(features)  # (2, 2, 3, 16): frames 0-31, then 32-39 plus 24 masked padding frames
    torch.testing.assert_close(out[:, 0], aggregator.resampler(features[:, :32]))
    torch.testing.assert_close(out[:, 1], aggregator.resampler(features[:, 32:]))


@pytest.mark.parametrize("bad, error, message", [
    (torch.randn(5, 16), ValueError, r"\(B, T, D\) or \(B, T, N, D\), got \(5, 16\) \(rank 2\); add a batch axis"),
    (torch.randn(1, 2, 3, 4, 16), ValueError, "rank 5"),
    (torch.randn(2, 5, 12), ValueError, "width 12 but the resampler expects D = 16; set ResamplerConfig\\(dim=12\\)"),
    (torch.ones(2, 5, 16, dtype=torch.long), TypeError, "floating point"),
    (np.zeros((2, 5, 16)), TypeError, "must be a torch.Tensor"),
])
def test_resampler_bad_features(bad, error, message):
    with pytest.raises(error, match=message):
        PerceiverResampler(CONFIG)(bad)
    with pytest.raises(error, match=message):
        TemporalAggregator(CONFIG)(bad)


def test_too_many_frames_for_one_resampler():
    with pytest.raises(ValueError, match="got 33 frames .* max_frames = 32; use a TemporalAggregator"):
        PerceiverResampler(CONFIG)(torch.randn(1, 33, 16))
    with pytest.raises(ValueError, match="frames_per_group 64 exceeds config.max_frames 32"):
        TemporalAggregator(CONFIG, frames_per_group=64)


# ------------------------------------------------------------------------------------------------
# The temporal task


def test_direction_clips_are_time_reversals():
    data = make_direction_dataset(6, num_frames=8, seed=3)
    assert data.frames.shape == (6, 8, 3, 32, 32) and sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    for clip_frames, label, shape in zip(data.frames, data.labels, data.shapes):
        assert (shape.velocity[0] > 0) == (DIRECTIONS[label] == "right")
        mirrored = MovingShape(shape.shape, shape.colour, shape.size,
                               (shape.start[0] + shape.velocity[0], shape.start[1]), (-shape.velocity[0], 0.0))
        reverse = render_clip([mirrored], [(i + 0.5) / 8 for i in range(8)])
        torch.testing.assert_close(reverse.flip(0), clip_frames)  # the same frames, played backwards


def test_encode_frames_and_single_frame_pick():
    class Flatten(nn.Module):
        def encode_image(self, images):  # (B, 3, H, W) -> (B, 3*H*W)
            return images.flatten(1)
    features = encode_frames(Flatten(), torch.rand(2, 5, 3, 8, 8), batch_size=3)
    assert features.shape == (2, 5, 192)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2, 5))
    picked = single_frame_features(features, seed=0)
    assert picked.shape == (2, 192) and all(any(torch.equal(p, f) for f in clip) for p, clip in zip(picked, features))


def test_video_classifier_learns_direction_from_ordered_features():
    # Features that encode only the x-position: a model must use their order to tell the direction.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(2, (96,), generator=generator)
    times = (torch.arange(32) + 0.5) / 32
    x = 0.5 + (2 * labels[:, None] - 1) * 0.5 * (times - 0.5)  # (96, 32)
    features = torch.cat([torch.sin(6 * x[..., None] * torch.arange(1, 9)),
                          torch.cos(6 * x[..., None] * torch.arange(1, 9))], dim=-1)  # (96, 32, 16)
    torch.manual_seed(0)
    model = VideoClassifier(CONFIG)
    losses = train_classifier(model, features[:64], labels[:64], steps=60, progress=False)
    assert losses[-1] < 0.1
    assert (model(features[64:]).argmax(-1) == labels[64:]).float().mean() >= 0.95
