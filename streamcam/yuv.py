"""Colour maths of planar YUV 4:2:0 (FFmpeg's yuv420p, OpenCV's I420), the format decoders give and
encoders take: plane views, the BT.601 and BT.709 matrices, conversions to and from RGB.

The model's input is converted on the device, and heatmaps are blended in YUV: the blend is affine, so
blending in YUV equals blending in RGB and converting. Limited range ("TV", Y in 16..235).
"""

from __future__ import annotations

import functools

import av
import numpy as np
import torch
import torch.nn.functional as F

# (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb.
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
# FFmpeg's AVColorSpace values of the matrices, to tag streams. Untagged video (2) and BT.470BG (5, the
# same matrix as SMPTE 170M) are read as BT.601, as swscale reads them.
AVCOL_SPC = {"bt709": 1, "bt601": 6}
_MATRIX_OF_AVCOL_SPC = {1: "bt709", 2: "bt601", 5: "bt601", 6: "bt601"}
_AVCOL_RANGE_JPEG = 2  # full range


def yuv_matrix(frame: av.VideoFrame) -> str | None:
    """The matrix of a limited-range YUV frame with even sizes whose planes can be used as they are,
    else None (full range, odd sizes, or a colour space other than BT.601/709)."""
    if frame.width % 2 or frame.height % 2 or frame.color_range == _AVCOL_RANGE_JPEG:
        return None
    return _MATRIX_OF_AVCOL_SPC.get(frame.colorspace)


def planes(data):
    """Y, U, V views of I420 buffers (..., H*3/2, W), numpy or torch: (...,H,W), (...,H/2,W/2) twice.
    The planes follow each other in memory; a chroma plane need not fill whole rows of the buffer."""
    height, width = data.shape[-2] * 2 // 3, data.shape[-1]
    lead = data.shape[:-2]
    flat = data.reshape(*lead, -1)
    luma, chroma = height * width, height * width // 4
    y = flat[..., :luma].reshape(*lead, height, width)
    u = flat[..., luma:luma + chroma].reshape(*lead, height // 2, width // 2)
    v = flat[..., luma + chroma:].reshape(*lead, height // 2, width // 2)
    return y, u, v


def nv12_to_i420(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """NVDEC's NV12 or P010 (Y (H,W), interleaved UV (H/2,W/2,2), rows possibly padded) -> one 8-bit
    I420 buffer on the same device."""
    if y.dtype != torch.uint8:  # P010: 10 bits in the high bits of 16
        y, uv = ((plane.to(torch.int32) >> 8).to(torch.uint8) for plane in (y, uv))
    return _packed(y, uv[..., 0], uv[..., 1])


def _packed(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Three planes (converted to uint8 as they are copied) -> one I420 buffer on their device."""
    height, width = y.shape
    packed = torch.empty((height * 3 // 2, width), dtype=torch.uint8, device=y.device)
    for out, plane in zip(planes(packed), (y, u, v)):
        out.copy_(plane)
    return packed


@functools.cache
def _on_device(matrix: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, its inverse, offset) as float32 on `device`, made once: a tensor made from host values for
    every frame would be a blocking copy that waits for the GPU."""
    rows, offset = _rgb_to_yuv(matrix)
    return tuple(t.to(device, torch.float32) for t in (rows, torch.linalg.inv(rows), offset))


def _rgb_to_yuv(matrix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, offset) with yuv = M @ rgb + offset, for RGB in 0..255 and limited-range YUV."""
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    luma = torch.tensor([kr, kg, kb], dtype=torch.float64)
    rows = torch.stack([
        luma * 219 / 255,
        (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) - luma) / (2 * (1 - kb)) * 224 / 255,
        (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) - luma) / (2 * (1 - kr)) * 224 / 255,
    ])
    return rows, torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


def rgb_to_yuv(rgb: torch.Tensor, matrix: str) -> torch.Tensor:
    """(..., 3, H, W) float RGB in 0..255 -> (..., 3, H, W) float Y, U, V (not rounded)."""
    rows, _, offset = _on_device(matrix, rgb.device)
    return torch.einsum("ij,...jhw->...ihw", rows, rgb) + offset[:, None, None]


def colours_to_yuv(bgr: np.ndarray, matrix: str) -> torch.Tensor:
    """(N,3) BGR colours (a colormap's table) -> (N,3) float Y, U, V."""
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1])).double()
    rows, offset = _rgb_to_yuv(matrix)
    return (rgb @ rows.T + offset).float()


@functools.cache
def colour_to_yuv(bgr: tuple[int, int, int], matrix: str) -> tuple[int, int, int]:
    """One BGR colour -> its rounded (Y, U, V), for drawing on planes (a few colours, asked per frame)."""
    return tuple(int(round(value)) for value in colours_to_yuv(np.array([bgr]), matrix)[0].tolist())


def yuv_to_rgb(yuv: torch.Tensor, matrix: str) -> torch.Tensor:
    """(..., 3, H, W) float Y, U, V (chroma at full resolution) -> (..., 3, H, W) float RGB in 0..255."""
    _, inverse, offset = _on_device(matrix, yuv.device)
    return torch.einsum("ij,...jhw->...ihw", inverse, yuv - offset[:, None, None]).clamp_(0, 255)


def bgr_to_planes(bgr: torch.Tensor, matrix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(H,W,3) uint8 BGR of even sizes on the device -> float Y (H,W) and chroma (2,H/2,W/2)."""
    yuv = rgb_to_yuv(bgr.permute(2, 0, 1).flip(0).float(), matrix)
    return yuv[0], F.avg_pool2d(yuv[None, 1:], 2)[0]


def pack(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Float Y (H,W) and chroma (2,H/2,W/2) -> one rounded, clamped I420 uint8 buffer on the same device."""
    return _packed(*(plane.round().clamp_(0, 255) for plane in (luma, chroma[0], chroma[1])))
