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
WORD, PAIR = np.dtype("<u4"), np.dtype("<u8")  # Little-endian: the bytes of a pixel in Pillow's order.


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
        height, width = self.luma.shape
        if self.blue.shape == (height // 2, width // 2) and height % 2 == width % 2 == 0:
            image = Image.frombuffer("YCbCr", (width, height), self.pixel_words(), "raw", "YCbCrX", 0, 1)
        else:
            bands = [Image.fromarray(np.ascontiguousarray(self.luma))]
            bands += [Image.fromarray(np.ascontiguousarray(plane)).resize((width, height), Image.Resampling.NEAREST)
                      for plane in (self.blue, self.red)]
            image = Image.merge("YCbCr", bands)
        image.info[PLANES] = self
        return image

    def pixel_words(self) -> np.ndarray:
        """(H, W) little-endian uint32: Y, Cb, Cr and a zero byte of each pixel, as Pillow keeps a YCbCr
        image, each chroma sample standing for its 2 x 2 pixels (what resizing it to the luma's size by
        nearest pixels gives). Whole words, for few steps: one word per chroma sample, doubled across
        as two words of one 64-bit number, then laid over two rows of luma."""
        height, width = self.luma.shape
        chroma = np.left_shift(self.blue, 8, dtype=WORD)
        chroma |= np.left_shift(self.red, 16, dtype=WORD)
        doubled = (chroma.astype(PAIR) * PAIR.type(1 << 32 | 1)).view(WORD)  # (H / 2, W): each word twice.
        words = np.empty((height // 2, 2, width), dtype=WORD)
        np.bitwise_or(self.luma.reshape(height // 2, 2, width), doubled[:, np.newaxis, :], out=words)
        return words.reshape(height, width)

    def rgb(self, side: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB with the longer side at most `side`: each plane shrunk to that size
        first, then converted."""
        height, width = self.luma.shape
        if max(height, width) > side:
            height, width = resample.target_size(height, width, side)
        if self.shrinks_together(height, width):
            shrunk = resample.shrink_sums(self.stacked_sums(), 2, height, width, planes=3)  # (h, 3 w): Y, Cb, Cr.
            return to_rgb(shrunk[:, :width], shrunk[:, width: 2 * width], shrunk[:, 2 * width:])
        luma = resample.shrink_to(self.luma, height, width) if (height, width) != self.luma.shape else self.luma
        blue, red = (chroma_at(plane, self.luma.shape, height, width) for plane in (self.blue, self.red))
        return to_rgb(luma, blue, red)

    def shrinks_together(self, height: int, width: int) -> bool:
        """True when shrinking the luma to (height, width) sums it by 2 x 2 squares first, which gives
        the chroma planes' size, and the chroma planes need no squares summed: then the three are
        shrunk as one array (stacked_sums), in a third of the steps."""
        luma_height, luma_width = self.luma.shape
        return (self.blue.shape == (luma_height // 2, luma_width // 2) and luma_height % 2 == luma_width % 2 == 0
                and resample.whole_block(luma_height, luma_width, height, width) == 2
                and resample.whole_block(luma_height // 2, luma_width // 2, height, width) == 1)

    def stacked_sums(self) -> np.ndarray:
        """(H / 2, 3 * W / 2) uint16, three planes side by side: the luma's sums of 2 x 2 squares, and
        each chroma sample times 4, the sum of the 2 x 2 luma pixels it stands for. Shrunk as sums of
        2 x 2 squares, each plane rounds to exactly what it rounds to alone: the chroma's totals are 4
        times theirs, over 4 times the divisor."""
        stacked = np.empty((self.blue.shape[0], 3, self.blue.shape[1]), dtype=np.uint16)
        stacked[:, 0] = resample.block_sums(self.luma, 2)
        stacked[:, 1] = self.blue
        stacked[:, 2] = self.red
        stacked[:, 1:] <<= 2  # Times 4; converted first: a shift that converts as it goes is slower.
        return stacked.reshape(len(stacked), -1)


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
    """(H, W) Y, Cb and Cr planes, uint8, to (H, W, 3) uint8 RGB in whole numbers: a view of (H, 3, W)
    rows of channel planes, each made whole (writing every third value of (H, W, 3) is several times
    slower), the layout a shrunk photo has."""
    y = luma.astype(np.int32)
    cb, cr = blue.astype(np.int32), red.astype(np.int32)
    cb -= 128
    cr -= 128
    rgb = np.empty((luma.shape[0], 3, luma.shape[1]), dtype=np.int32)
    np.multiply(cr, RED_FROM_CR, out=rgb[:, 0])
    np.multiply(cb, GREEN_FROM_CB, out=rgb[:, 1])
    rgb[:, 1] += cr * GREEN_FROM_CR
    np.multiply(cb, BLUE_FROM_CB, out=rgb[:, 2])
    rgb += HALF
    rgb >>= 16
    rgb += y[:, np.newaxis, :]
    np.maximum(rgb, 0, out=rgb)  # Clipped to 0-255, as np.clip does, in place.
    np.minimum(rgb, 255, out=rgb)
    return rgb.astype(np.uint8).transpose(0, 2, 1)
