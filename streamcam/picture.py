"""A frame's pixels, one type for every stage: their format (BGR or I420), where they are (the host, or
the compute device), and their colour matrix, with the few operations the stages need.

    decoder ──Picture──► explain (upload, model input) ──► render (planes, blend) ──► encoder / window
                                                              text and boxes (pen) ┘

- `BgrPicture`: (H,W,3) uint8 BGR, as OpenCV, image files and the window have pictures. Its YUV is
  BT.601, as OpenCV converts it.
- `I420Picture`: planar YUV 4:2:0 packed in one (H*3/2, W) uint8 buffer, the format decoders give and
  encoders take. On a GPU, frames stay in it from the decoder to the encoder: half the bytes of RGB, no
  colour conversion on the CPU, and the matrix (BT.601 or BT.709) of the video kept.

Data is a numpy array on the host or a torch tensor (on the compute device, or on the CPU when the GPU
path runs there). Stages never ask which kind a picture is: they call its methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import cv2
import numpy as np
import torch

from . import yuv

_FONT = cv2.FONT_HERSHEY_SIMPLEX


class Picture(ABC):
    data: np.ndarray | torch.Tensor
    matrix: str  # "bt601" or "bt709": the matrix its YUV is (or becomes) in

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """(height, width)."""

    @property
    def layout(self) -> tuple:
        """Pictures with the same layout can share a batch: same kind, size, matrix and place."""
        return type(self).__name__, self.matrix, self.shape, isinstance(self.data, torch.Tensor)

    @abstractmethod
    def with_data(self, data: np.ndarray | torch.Tensor) -> Picture:
        """The same kind of picture (and matrix) over other pixels."""

    @abstractmethod
    def bgr(self) -> np.ndarray:
        """(H,W,3) BGR uint8 on the host (a view where it already is one)."""

    @abstractmethod
    def gray(self) -> np.ndarray:
        """(H,W) uint8 brightness on the host, for motion masks."""

    @abstractmethod
    def yuv_planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float Y (H,W) and chroma (2,H/2,W/2) where the pixels are (a torch tensor's device)."""

    @abstractmethod
    def video_frame(self, matrix: str) -> av.VideoFrame:
        """A yuv420p PyAV frame for an encoder whose stream uses `matrix`."""

    @abstractmethod
    def model_input(self, batch: torch.Tensor, preprocess) -> torch.Tensor:
        """A stacked batch of pictures like this one (B, ...) -> the normalised model input (B,3,h,w)."""

    @abstractmethod
    def pen(self) -> Pen:
        """Draws text and boxes on this (host) picture, in place."""

    def writable(self) -> Picture:
        """This picture, or a copy of it when its pixels are read-only (a decoder's buffer)."""
        flags = getattr(self.data, "flags", None)
        return self if flags is None or flags.writeable else self.with_data(self.data.copy())


@dataclass(frozen=True)
class BgrPicture(Picture):
    data: np.ndarray | torch.Tensor  # (H,W,3) uint8
    matrix: str = "bt601"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape[:2])

    def with_data(self, data) -> BgrPicture:
        return BgrPicture(data)

    def bgr(self) -> np.ndarray:
        return _host(self.data)

    def gray(self) -> np.ndarray:
        return cv2.cvtColor(self.bgr(), cv2.COLOR_BGR2GRAY)

    def yuv_planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        return yuv.bgr_to_planes(torch.as_tensor(self.data), self.matrix)

    def video_frame(self, matrix: str) -> av.VideoFrame:
        if matrix == "bt601":  # OpenCV's SIMD conversion: ten times faster than swscale's
            return I420Picture(cv2.cvtColor(self.bgr(), cv2.COLOR_BGR2YUV_I420)).video_frame(matrix)
        frame = av.VideoFrame.from_ndarray(self.bgr(), format="bgr24").reformat(format="yuv420p", dst_colorspace="itu709")
        return I420Picture(frame.to_ndarray(), matrix).video_frame(matrix)

    def model_input(self, batch: torch.Tensor, preprocess) -> torch.Tensor:
        return preprocess(batch, bgr=True)

    def pen(self) -> Pen:
        return Pen([(self.data, 1)], lambda bgr: [bgr])


@dataclass(frozen=True)
class I420Picture(Picture):
    data: np.ndarray | torch.Tensor  # (H*3/2, W) uint8: H rows of Y, then U and V (H/2 x W/2 each)
    matrix: str = "bt601"

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[0] * 2 // 3, self.data.shape[1]

    def with_data(self, data) -> I420Picture:
        return I420Picture(data, self.matrix)

    def planes(self) -> tuple:
        """(Y, U, V) views of the buffer: (H,W), (H/2,W/2), (H/2,W/2)."""
        return yuv.planes(self.data)

    def bgr(self) -> np.ndarray:
        return self.video_frame(self.matrix).to_ndarray(format="bgr24", threads=1)

    def gray(self) -> np.ndarray:
        return _host(self.planes()[0])  # luma: only its plane crosses to the host

    def yuv_planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        y, u, v = yuv.planes(torch.as_tensor(self.data))
        return y.float(), torch.stack([u, v]).float()

    def video_frame(self, matrix: str) -> av.VideoFrame:
        """Wraps the host buffer without a copy where PyAV can: it infers a buffer's height as a multiple
        of 4, so 4n+2 rows are copied."""
        if matrix != self.matrix:
            return BgrPicture(self.bgr()).video_frame(matrix)
        data = np.ascontiguousarray(_host(self.data))
        wrap = av.VideoFrame.from_numpy_buffer if self.shape[0] % 4 == 0 else av.VideoFrame.from_ndarray
        frame = wrap(data, format="yuv420p")
        frame.colorspace = yuv.AVCOL_SPC[self.matrix]
        return frame

    def model_input(self, batch: torch.Tensor, preprocess) -> torch.Tensor:
        return preprocess.i420(batch, self.matrix)

    def pen(self) -> Pen:
        return Pen(list(zip(self.planes(), (1, 2, 2))), lambda bgr: yuv.colour_to_yuv(bgr, self.matrix))


def _host(data: np.ndarray | torch.Tensor) -> np.ndarray:
    return data.cpu().numpy() if isinstance(data, torch.Tensor) else data


# ----- from the decoder ----------------------------------------------------------------------------------

def decoded_picture(frame: av.VideoFrame, keep_yuv: bool) -> Picture:
    """A decoded frame as a picture: the decoder's own planes where the run keeps YUV and they are
    plain 4:2:0 of a known matrix, else BGR (hardware frames of other formats are downloaded first)."""
    matrix = yuv.yuv_matrix(frame)
    if frame.format.name == "cuda" and frame.sw_format.name in ("nv12", "p010le") and matrix:
        # NVDEC: copied on the GPU into an I420 buffer of our own at once, since FFmpeg's pool of decoder
        # surfaces is small and holding its frames would stall the decoder. FFmpeg copies decoded
        # surfaces on CUDA's legacy default stream, which torch's current stream is in this thread, so
        # this copy runs after the decoder's.
        return I420Picture(i420_from_dlpack(frame), matrix)
    if keep_yuv and frame.format.name == "yuv420p" and matrix:
        return I420Picture(frame.to_ndarray(), matrix)
    return BgrPicture(frame.to_ndarray(format="bgr24", threads=1))  # multithreaded swscale is slower here


def i420_from_dlpack(frame: av.VideoFrame) -> torch.Tensor:
    """An NV12 or P010 frame's planes, shared through DLPack (on the GPU for NVDEC), repacked as I420
    where they are. PyAV refuses the stream that torch.from_dlpack(plane) would pass, so the planes are
    exported without one."""
    y, uv = (torch.from_dlpack(plane.__dlpack__()) for plane in frame.planes[:2])
    return yuv.nv12_to_i420(y, uv)


# ----- between the host and the compute device ----------------------------------------------------------
#
# From pageable memory a copy to the GPU is staged by the driver and blocks; from pinned (page-locked)
# memory it is a DMA that overlaps with compute. torch's caching host allocator recycles a pinned block
# once the copies that used it have finished, so a fresh pinned buffer per batch costs nothing after the
# first few. On the CPU both directions are free: tensors and arrays share memory.

@dataclass(frozen=True)
class PictureBatch:
    """Pictures of one layout stacked on the compute device in one copy."""

    data: torch.Tensor  # (B, ...) uint8
    kind: Picture  # the first picture: what the others are too

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> Picture:
        return self.kind.with_data(self.data[index])

    def model_input(self, preprocess) -> torch.Tensor:
        return self.kind.model_input(self.data, preprocess)


def upload(pictures: Sequence[Picture], device: torch.device) -> PictureBatch:
    """Stack same-layout pictures into one batch on `device`. Host arrays are stacked straight into
    pinned memory (the only CPU copy) and sent without blocking; pictures already on the device (NVDEC)
    are stacked there."""
    images = [picture.data for picture in pictures]
    if isinstance(images[0], torch.Tensor):
        data = torch.stack(images).to(device)
    elif device.type != "cuda":
        data = torch.from_numpy(np.stack(images))
    else:
        staging = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=True)
        np.stack(images, out=staging.numpy())
        data = staging.to(device, non_blocking=True)
    return PictureBatch(data, pictures[0])


def download(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a host array: on CUDA, one non-blocking copy into pinned memory on the current stream,
    waiting for that stream only (not for work other threads queued on other streams)."""
    if tensor.device.type != "cuda":
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return host.numpy()  # the array keeps the pinned tensor alive


def picture_from_planes(luma: torch.Tensor, chroma: torch.Tensor, matrix: str) -> I420Picture:
    """Float planes rendered on the device -> an I420 picture on the host, in one copy."""
    return I420Picture(download(yuv.pack(luma, chroma)), matrix)


# ----- drawing -------------------------------------------------------------------------------------------

class Pen:
    """Draws the same shapes on a BGR picture or on the three planes of an I420 picture (the chroma planes
    at half the coordinates), so that text and boxes look alike whichever renderer made the picture."""

    def __init__(self, layers: list[tuple[np.ndarray, int]], colour: Callable[[tuple[int, int, int]], list]):
        self.layers = layers  # (plane, subsampling)
        self.colour = colour  # BGR -> one value per plane

    def darken(self, x0: int, y0: int, x1: int, y1: int, factor: float) -> None:
        """Move a region towards black by `factor` (0.35 keeps 35 % of its brightness and colour)."""
        for (plane, step), black in zip(self.layers, self.colour((0, 0, 0))):
            region = plane[y0 // step:-(-y1 // step), x0 // step:-(-x1 // step)]
            region[:] = (np.asarray(black) + (region - np.asarray(black)) * factor).astype(np.uint8)

    def text(self, line: str, origin: tuple[int, int], scale: float, thickness: int, bgr: tuple[int, int, int]) -> None:
        for (plane, step), colour in zip(self.layers, self.colour(bgr)):
            cv2.putText(plane, line, (origin[0] // step, origin[1] // step), _FONT, scale / step, colour,
                        max(1, round(thickness / step)), cv2.LINE_AA)

    def rectangle(self, corners: tuple[tuple[int, int], tuple[int, int]], bgr: tuple[int, int, int], thickness: int) -> None:
        for (plane, step), colour in zip(self.layers, self.colour(bgr)):
            (x0, y0), (x1, y1) = corners
            cv2.rectangle(plane, (x0 // step, y0 // step), (x1 // step, y1 // step), colour,
                          max(1, round(thickness / step)), cv2.LINE_AA)


def text_size(line: str, scale: float, thickness: int) -> tuple[tuple[int, int], int]:
    """((width, height), baseline) of a line as the pen draws it."""
    return cv2.getTextSize(line, _FONT, scale, thickness)
