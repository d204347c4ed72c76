"""Camera frames as YUV420 planes (Picamera2's lores stream): their colour at work size, and a picture to show.

Picamera2's `capture_array("lores")` gives a (height * 3/2, stride) uint8 array: `height` rows of
luma (Y), then the U (Cb) and V (Cr) planes at half the width and half the height, each of their
rows `stride / 2` bytes long (two of them to a row of the array). The preprocessing needs the
colour only at its work size, so the luma is shrunk to that size and the chroma planes, a quarter
of the pixels already, are shrunk (or doubled) to it; no full-size RGB array is made.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from . import resample

PLANES = "fashion_board.yuv420"  # The key of an image's `info` that holds its Yuv420 planes.
# YCbCr (JPEG's full range, as Picamera2's preview stream and Pillow's YCbCr mode use) to RGB in
# 16-bit fixed point, as libjpeg does it: R = Y + 1.402 Cr', G = Y - 0.34414 Cb' - 0.71414 Cr',
# B = Y + 1.772 Cb', where Cb' = Cb - 128 and Cr' = Cr - 128. Whole numbers: the same bytes everywhere.
RED_FROM_CR, GREEN_FROM_CB, GREEN_FROM_CR, BLUE_FROM_CB = 91881, -22554, -46802, 116130
HALF = 1 << 15


@dataclasses.dataclass(frozen=True)
class Yuv420:
    luma: np.ndarray  # (H, W) uint8: Y.
    blue: np.ndarray  # (H / 2, W / 2) uint8: U, Cb.
    red: np.ndarray  # (H / 2, W / 2) uint8: V, Cr.

    @classmethod
    def from_array(cls, array: np.ndarray, width: int, height: int) -> "Yuv420":
        """The planes of Picamera2's YUV420 array for a width x height stream (views, no copies)."""
        stride = array.shape[1]
        flat = array.reshape(-1)
        chroma_rows, chroma_stride = (height + 1) // 2, stride // 2
        start = height * stride
        middle = start + chroma_rows * chroma_stride
        chroma_width = (width + 1) // 2
        planes = [flat[begin: begin + chroma_rows * chroma_stride].reshape(chroma_rows, chroma_stride)[:, :chroma_width]
                  for begin in (start, middle)]
        return cls(array[:height, :width], *planes)

    def image(self) -> Image.Image:
        """The frame as a Pillow YCbCr image at the luma's size, to show or save; its `info` holds
        these planes, for the preprocessing."""
        size = (self.luma.shape[1], self.luma.shape[0])
        bands = [Image.fromarray(np.ascontiguousarray(self.luma))]
        bands += [Image.fromarray(np.ascontiguousarray(plane)).resize(size, Image.Resampling.NEAREST)
                  for plane in (self.blue, self.red)]
        image = Image.merge("YCbCr", bands)
        image.info[PLANES] = self
        return image

    def rgb(self, side: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB with the longer side at most `side`: each plane shrunk to that size
        first, then converted."""
        height, width = self.luma.shape
        if max(height, width) > side:
            height, width = resample.target_size(height, width, side)
        luma = resample.shrink_to(self.luma, height, width) if (height, width) != self.luma.shape else self.luma
        blue, red = (chroma_at(plane, self.luma.shape, height, width) for plane in (self.blue, self.red))
        return to_rgb(luma, blue, red)


def planes_of(image: Image.Image) -> Yuv420 | None:
    """The planes a camera image was made from, or None. Pillow copies `info` into images derived from
    it (converted, cropped, turned): only the YCbCr image of the planes' own size is taken as theirs."""
    planes = image.info.get(PLANES)
    if planes is None or image.mode != "YCbCr" or image.size != (planes.luma.shape[1], planes.luma.shape[0]):
        return None
    return planes


def chroma_at(plane: np.ndarray, luma_shape: tuple, height: int, width: int) -> np.ndarray:
    """A chroma plane at (height, width): shrunk when it is larger, else doubled to the luma's size first."""
    if plane.shape[0] < height or plane.shape[1] < width:
        plane = np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)[:luma_shape[0], :luma_shape[1]]
    return resample.shrink_to(plane, height, width) if plane.shape != (height, width) else plane


def to_rgb(luma: np.ndarray, blue: np.ndarray, red: np.ndarray) -> np.ndarray:
    """(H, W) Y, Cb and Cr planes, uint8, to (H, W, 3) uint8 RGB in whole numbers."""
    y = luma.astype(np.int32)
    cb, cr = blue.astype(np.int32) - 128, red.astype(np.int32) - 128
    rgb = np.empty((*luma.shape, 3), dtype=np.int32)
    rgb[..., 0] = y + ((RED_FROM_CR * cr + HALF) >> 16)
    rgb[..., 1] = y + ((GREEN_FROM_CB * cb + GREEN_FROM_CR * cr + HALF) >> 16)
    rgb[..., 2] = y + ((BLUE_FROM_CB * cb + HALF) >> 16)
    return np.clip(rgb, 0, 255).astype(np.uint8)
