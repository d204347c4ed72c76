"""What the host's pictures share: matplotlib figures drawn with Agg (no pyplot state), PNG bytes of a
figure or a Pillow image, and one legible font for the Pillow contact sheets.

Charts (the confusion matrix, the bench bars) are matplotlib figures with constrained layout, so no
label is ever clipped; sheets of photos and 28x28 frames are Pillow images, where pasting is simpler.
"""

import io
import pathlib

import matplotlib
import matplotlib.figure
from PIL import Image, ImageFont

DPI = 100  # Pixels per inch of every saved figure: a figure `width` inches wide is 100 * width pixels.
FONT_FILE = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # Shipped with matplotlib.


def figure(width: float, height: float) -> matplotlib.figure.Figure:
    """A blank figure of `width` x `height` inches whose layout keeps every label inside it."""
    return matplotlib.figure.Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_bytes(picture: matplotlib.figure.Figure | Image.Image) -> bytes:
    """The PNG of a figure (at DPI, its own size: nothing cropped or padded) or of a Pillow image."""
    buffer = io.BytesIO()
    if isinstance(picture, matplotlib.figure.Figure):
        picture.savefig(buffer, format="png", dpi=DPI)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` pixels, for text on Pillow sheets; the charts use it too."""
    return ImageFont.truetype(str(FONT_FILE), size)
