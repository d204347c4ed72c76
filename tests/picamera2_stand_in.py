"""A stand-in for the Pi camera library (no camera here), copied by the tests into a folder named picamera2.

It gives what Picamera2 gives on a Pi: `capture_array("lores")` as a YUV420 array of shape
(height * 3/2, stride), the luma rows first, then the U and V planes at half the width and height,
two of their rows to a row of the array; the stride padded to 64 bytes as the Pi's ISP pads it. The
frames are a real image beside this file (frame.png or frame.jpg), scaled to the stream's size.
`yuv420_array` is also what the host tests use to make such arrays from real photos.
"""

import pathlib

import numpy as np
from PIL import Image

STRIDE_ALIGN = 64


def yuv420_array(image: Image.Image, width: int, height: int) -> np.ndarray:
    """An RGB image as Picamera2's YUV420 array of a width x height stream: JPEG's full-range YCbCr
    (Pillow's), chroma averaged over 2 x 2 pixels, rows padded to a multiple of STRIDE_ALIGN."""
    stride = -(-width // STRIDE_ALIGN) * STRIDE_ALIGN
    luma, blue, red = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).convert("YCbCr").split()
    array = np.zeros((height * 3 // 2, stride), np.uint8)
    array[:height, :width] = np.asarray(luma)
    flat = array.reshape(-1)
    for number, plane in enumerate((blue, red)):
        chroma = np.zeros((height // 2, stride // 2), np.uint8)
        chroma[:, :width // 2] = np.asarray(plane.reduce(2))
        start = height * stride + number * chroma.size
        flat[start: start + chroma.size] = chroma.ravel()
    return array


class Picamera2:
    def create_preview_configuration(self, main, lores=None):
        return {"main": main, "lores": lores}

    def configure(self, config):
        self.config = config

    def stream_configuration(self, name):
        width, height = self.config[name]["size"]
        return {"size": (width, height), "stride": -(-width // STRIDE_ALIGN) * STRIDE_ALIGN,
                "format": self.config[name].get("format", "XBGR8888")}

    def start(self):
        pass

    def capture_array(self, name="main"):
        if name != "lores":
            raise RuntimeError("the stand-in has only the lores stream")
        frame = next(pathlib.Path(__file__).parent.glob("frame.*"))
        return yuv420_array(Image.open(frame), *self.config["lores"]["size"])
