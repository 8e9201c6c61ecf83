"""One clock for a source: where its frames and packets go on the output's time line.

Files keep their own timestamps, from zero. Where timestamps jump back (concatenated segments), every
stream of the source is shifted alike, so audio, data and video stay in sync. A stream without
timestamps (a raw .h264) is timed by its frame rate.
"""

from __future__ import annotations

import collections
from fractions import Fraction

import av

ASSUMED_FPS = Fraction(25)  # FFmpeg's own guess for a raw stream that says nothing


class Timeline:
    """One clock for every stream of a source: source times (seconds) -> output times.

    The container's start is subtracted from all. When a stream's decoding time goes back (concatenated
    segments, a restarted encoder), its packets enter the next segment, which is shifted to start where
    the whole source had got to: the latest decoding end of any stream's packets. The other streams
    take the same shift when they get there, so audio, data and video stay together. Decoding times,
    not presentation times, line segments up: every stream of a segment starts decoding at about the
    same time, while B-frames delay a video's first presentation time.
    """

    def __init__(self, origin: Fraction):
        self.offsets = [-origin]  # per segment: seconds added to source times
        self.end = Fraction(0)  # the latest end (decoding time + duration, placed) of any stream's packet
        self.state: dict[object, tuple[int, Fraction]] = {}  # stream -> (its segment, last decoding time)

    def segment(self, stream: object, dts: Fraction, duration: Fraction) -> int:
        """The segment of a stream's next packet, given its decoding time."""
        segment, last = self.state.get(stream, (0, None))
        if last is not None and dts < last:
            segment += 1
            if segment == len(self.offsets):  # the first stream to get here: this packet starts at the end
                self.offsets.append(self.end - dts)
        self.state[stream] = (segment, dts)
        self.end = max(self.end, dts + duration + self.offsets[segment])
        return segment


class StreamClock:
    """One video stream's timing: its time base, one frame's length, the timeline segment of each packet
    still in the decoder, and the last timestamp handed out."""

    def __init__(self, stream: av.video.stream.VideoStream, rate: Fraction | None, stamped: bool):
        self.stamped = stamped  # False: the container has no timestamps, frames are counted at `rate`
        self.time_base = Fraction(stream.time_base) if stamped and stream.time_base else 1 / (rate or ASSUMED_FPS)
        self.step = max(1, round(1 / ((rate or ASSUMED_FPS) * self.time_base)))  # one frame, in time_base ticks
        # (packet pts, segment) of packets whose frames have not come out yet; a decoder holds a few
        self.in_decoder: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        self.segment = 0
        self.last_out: int | None = None  # what was handed out, strictly rising

    def segment_of(self, pts: int) -> int:
        """The segment of the packet a decoded frame came from. Frames leave in presentation order, so
        packets of earlier segments still listed never gave a frame (broken, or skipped): forget them."""
        while self.in_decoder and self.in_decoder[0][1] < self.segment:
            self.in_decoder.popleft()
        for position, (packet_pts, segment) in enumerate(self.in_decoder):
            if packet_pts == pts:
                del self.in_decoder[position]
                self.segment = segment
                return segment
        return self.segment
