"""Timing and streams of real-world files: raw elementary streams, concatenated segments with audio,
dual-camera dashcams with GPS tracks. Each kind of file keeps its frames, its timing and its streams."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from media import probe, streams_of, write_clip, write_dual_camera
from streamcam import api
from streamcam.config import RunConfig

FAST = {"model": "resnet18", "weights": "none", "input_size": 64}


def run(source, **options):
    return api.run(RunConfig(source=str(source), **{**FAST, **options}), handle_signals=False)


@pytest.mark.parametrize("suffix, codec", [(".h264", "libx264"), (".hevc", "libx265")])
def test_a_raw_elementary_stream_is_timed_by_its_frame_rate(tmp_path, caplog, suffix, codec):
    """Raspberry Pi cameras and several dashcams write raw H.264 or HEVC: no container, no timestamps."""
    raw = write_clip(tmp_path / f"pi{suffix}", frames=50, fps=25, codec=codec)
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        result = run(raw, output=tmp_path / "out.mp4")
    written = probe(tmp_path / "out.mp4")
    assert result.stats.written == written["frames"] == 50
    assert written["times"] == pytest.approx([i / 25 for i in range(50)], abs=1e-6)  # 40 ms each, 2 s in all
    warnings = [r.getMessage() for r in caplog.records if "no timestamps" in r.getMessage()]
    assert len(warnings) == 1 and "25 fps" in warnings[0] and "--fps" in warnings[0]


def test_fps_times_a_raw_stream_whose_rate_is_unknown_or_wrong(tmp_path, caplog):
    raw = write_clip(tmp_path / "pi.h264", frames=30, fps=25)
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        run(raw, output=tmp_path / "out.mkv", fps=30)
    assert probe(tmp_path / "out.mkv")["times"] == pytest.approx([i / 30 for i in range(30)], abs=1e-3)
    assert not [r for r in caplog.records if "no timestamps" in r.getMessage()]  # the user said the rate


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_concatenated_segments_shift_audio_and_video_alike(tmp_path, suffix):
    """Two MPEG-TS recordings cat'ed together: both start at the same timestamps. Video and audio must
    both continue where the first segment ended, shifted alike (one clock), so they stay in sync. (Into
    MP4, the TS's ADTS audio also needs its configuration moved to the header.)"""
    first = write_clip(tmp_path / "a.ts", frames=24, audio=True)
    second = write_clip(tmp_path / "b.ts", frames=24, audio=True)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    output = tmp_path / f"out{suffix}"
    result = run(joined, output=output)
    assert result.stats.written == 48

    def tracks(path):
        found = {s["type"]: np.sort(s["times"]) for s in streams_of(path)}
        return found["video"], found["audio"]

    video, audio = tracks(output)
    source_video, source_audio = tracks(first)
    assert len(video) == 48 and len(audio) == 2 * len(source_audio)
    assert np.all(np.diff(audio) > 0) and np.all(np.diff(video) > 0), "every stream in time order"
    steps = np.diff(video)
    assert np.sum(steps > 0.05) == 1 and steps.max() < 0.2  # steady frames, and one short gap at the join
    # Within the second segment, audio and video sit as they did in the recording: no drift between them.
    second_video, second_audio = video[24], audio[len(source_audio)]
    assert second_audio - second_video == pytest.approx(source_audio[0] - source_video[0], abs=1e-3)
    assert second_video > video[23] and second_audio > audio[len(source_audio) - 1]


def test_a_dual_camera_file_explains_the_first_camera_and_names_the_other(tmp_path, caplog):
    clip = write_dual_camera(tmp_path / "dashcam.mp4", frames=12)
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        result = run(clip, output=tmp_path / "out.mp4")
    warnings = [r.getMessage() for r in caplog.records if "video streams" in r.getMessage()]
    assert len(warnings) == 1 and "stream 1 (128x96 h264)" in warnings[0] and "--video-stream all" in warnings[0]
    assert result.streams.startswith("video stream 0 (160x120 h264)")
    videos = [s for s in streams_of(tmp_path / "out.mp4") if s["type"] == "video"]
    assert [v["size"] for v in videos] == [(160, 120)] and len(videos[0]["times"]) == 12


def test_video_stream_picks_a_camera(tmp_path):
    clip = write_dual_camera(tmp_path / "dashcam.mp4", frames=12)
    run(clip, output=tmp_path / "rear.mp4", video_stream="1")
    written = probe(tmp_path / "rear.mp4")
    assert (written["width"], written["height"], written["frames"]) == (128, 96, 12)


def test_video_stream_all_explains_each_camera_into_its_own_stream(tmp_path):
    clip = write_dual_camera(tmp_path / "dashcam.mp4", frames=12)
    result = run(clip, output=tmp_path / "both.mp4", log=tmp_path / "log.jsonl", video_stream="all", view="side")
    assert result.stats.read == result.stats.written == 24
    videos = [s for s in streams_of(tmp_path / "both.mp4") if s["type"] == "video"]
    assert [v["size"] for v in videos] == [(320, 120), (256, 96)]  # side by side: original | overlay
    for camera in videos:
        assert np.allclose(sorted(camera["times"]), [i / 24 for i in range(12)], atol=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sorted((row["stream"], row["frame"]) for row in rows) == [(s, i) for s in (0, 1) for i in range(12)]
    assert result.streams == "video stream 0 (160x120 h264), video stream 1 (128x96 h264)"


def test_gps_tracks_are_copied_where_the_container_holds_them_and_named_where_not(tmp_path, caplog):
    clip = write_dual_camera(tmp_path / "dashcam.ts", frames=12, data="klv")
    run(clip, output=tmp_path / "out.ts", video_stream="all")
    streams = streams_of(tmp_path / "out.ts")
    data = [s for s in streams if s["type"] == "data"]
    front = np.sort(next(s for s in streams if s["type"] == "video")["times"])
    assert len(data) == 1 and np.allclose(data[0]["times"], front, atol=1e-3)  # each fix with its frame, as recorded
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        run(clip, output=tmp_path / "out.mp4", video_stream="all")
    assert not [s for s in streams_of(tmp_path / "out.mp4") if s["type"] == "data"]
    assert [r.getMessage() for r in caplog.records if "left out" in r.getMessage()] == [
        ".mp4 cannot hold the source's data stream 2 (klv); it is left out"]


def test_cover_art_is_not_a_camera(tmp_path, caplog):
    """An MP4's attached picture (cover art) is a video stream of one still frame, not a second camera."""
    import av

    from media import moving_square

    clip = tmp_path / "with_cover.mp4"
    with av.open(str(clip), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        still = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24").reformat(format="yuvj420p")
        still.pts = 0
        container.mux(cover.encode(still))
        container.mux(cover.encode(None))
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(moving_square(index, 160, 120), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        result = run(clip, output=tmp_path / "out.mp4", video_stream="all")
    assert result.stats.written == 12 and result.streams is None
    assert not [r for r in caplog.records if "video streams" in r.getMessage()]
