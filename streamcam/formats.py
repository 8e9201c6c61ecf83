"""File formats by name: which files are images, and how each video container is encoded."""

from __future__ import annotations

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}

# Extension -> video encoder. H.264 plays everywhere; WebM needs VP9.
VIDEO_CODECS = {
    ".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264",
    ".avi": "libx264", ".ts": "libx264", ".webm": "libvpx-vp9",
}

# MP4/MOV are written fragmented, a fragment at least every second: a killed process or a full disk
# leaves a file that plays up to its last fragment (a plain MP4 is unplayable until its index is written
# at the very end). delay_moov writes the header with the first fragment, once the encoder's B-frame
# delay is known, so the first frame still starts at 0 (in sync with the audio). MKV, WebM, AVI and TS
# are playable as they are written.
FRAGMENTED = {".mp4", ".mov", ".m4v"}
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "frag_duration": "1000000"}
