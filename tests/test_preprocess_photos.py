"""The board's preprocessing on real phone photos (tests/preprocess_photos/ and tests/photos/, CC0): the colour
cut, the segmentation's doubt in classify.py's JSON, the canonical orientation (a photo and its mirror image
make one frame), and camera frames from Picamera2's YUV420 planes."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

import picamera2_stand_in
from conftest import REPO
from fashion_board import preprocess as board_preprocess
from fashion_board import segment, yuv

PHOTOS = REPO / "tests" / "preprocess_photos"
EVERY_PHOTO = sorted([*PHOTOS.glob("*.jpg"), *(REPO / "tests" / "photos").rglob("*.jpg")])
# Garments that differ from their background more in colour than in brightness: grey pullover on a
# pink bed, grey shirt on pink, grey-blue trousers on a beige floor. Grey alone loses most of them.
CLEAR = ["pullover-ceaa1a39.jpg", "shirt-41aa66b1.jpg", "trouser-445ec205.jpg"]
# Garments on a red rug with lighting that falls off towards the corners: a busy border, so doubted.
DOUBTED = ["t-shirt-top-be0c33d8.jpg", "dress-08e1576e.jpg", "trouser-dd8e154b.jpg"]


# A light shirt and a light T-shirt filling much of the frame on a pale floor: the border's residue is
# the garment's own contrast, and cutting there left a near-empty frame (under 4% lit); Otsu's level
# bounds the cut.
BORDER_IS_GARMENT = ["shirt-b69d769b.jpg", "t-shirt-top-330f1f98.jpg"]


@pytest.fixture(scope="module")
def preprocess():
    return board_preprocess


def frame_of(preprocess, name: str) -> tuple[np.ndarray, bool]:
    frame = preprocess.make_frame(preprocess.decode(PHOTOS / name, use_draft=True), None)
    return frame.pixels, frame.unsure


def lit_extent(frame: np.ndarray) -> tuple[float, int]:
    """Share of the frame that is garment (over 64), and the longest side of the garment's box."""
    rows, columns = np.flatnonzero((frame > 64).any(axis=1)), np.flatnonzero((frame > 64).any(axis=0))
    return float((frame > 64).mean()), max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1


@pytest.mark.parametrize("name", CLEAR)
def test_colour_cut_keeps_the_whole_garment_and_is_sure(preprocess, name):
    frame, doubtful = frame_of(preprocess, name)
    share, longest = lit_extent(frame)
    assert frame.shape == (28, 28) and frame.dtype == np.uint8 and frame.max() == 255
    assert share > 0.3 and longest >= 26 and not doubtful
    gray = preprocess.to_dataset_form(preprocess.to_grayscale(preprocess.decode(PHOTOS / name, use_draft=True)))
    assert lit_extent(gray)[0] < share  # What grey alone made of it: less of the garment.


@pytest.mark.parametrize("name", DOUBTED)
def test_a_busy_border_makes_the_cut_doubtful(preprocess, name):
    frame, doubtful = frame_of(preprocess, name)
    assert doubtful and frame.max() == 255


@pytest.mark.parametrize("name", BORDER_IS_GARMENT)
def test_otsu_bound_keeps_a_garment_that_fills_the_border(preprocess, name):
    frame, _ = frame_of(preprocess, name)
    share, longest = lit_extent(frame)
    assert share > 0.3 and longest >= 26


def test_otsu_level_splits_two_levels_and_ignores_their_proportions(preprocess):
    rng = np.random.default_rng(0)
    for garment_share in (0.1, 0.5, 0.9):
        signal = np.where(rng.random((112, 112)) < garment_share, 180.0, 30.0) + rng.normal(0, 5, (112, 112))
        assert 40 < segment.otsu_level(signal.astype(np.float32)) < 170
    assert segment.otsu_level(np.zeros((8, 8), np.float32)) == 0.0  # Uniform: no split, no error.


def test_grey_and_data_set_images_are_never_doubted(preprocess):
    grey = Image.open(PHOTOS / CLEAR[0]).convert("L")
    assert preprocess.make_frame(grey, None).unsure is False
    small = Image.fromarray(np.asarray(grey.resize((28, 28))))
    assert preprocess.make_frame(small.convert("RGB"), None).unsure is False


def test_classify_json_says_unsure_for_a_doubtful_cut(device_python, tiny_build, tmp_path):
    result = subprocess.run([str(device_python), str(tiny_build / "device" / "classify.py"), str(PHOTOS),
                             "--json", "--threshold", "0"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    unsure = {line["path"].rsplit("/", 1)[-1]: line["unsure"] for line in lines if "path" in line}
    # The garments that fill the border touch three sides: kept whole, and still doubted.
    assert unsure == {**{name: False for name in CLEAR}, **{name: True for name in DOUBTED + BORDER_IS_GARMENT}}


@pytest.mark.parametrize("path", EVERY_PHOTO, ids=lambda path: path.name)
def test_a_photo_and_its_mirror_image_make_the_same_frame(preprocess, path):
    image = preprocess.decode(path, use_draft=True)
    frame = preprocess.make_frame(image, None)
    mirrored = preprocess.make_frame(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), None)
    assert mirrored.pixels.tobytes() == frame.pixels.tobytes()
    assert (mirrored.unsure, mirrored.objects) == (frame.unsure, frame.objects)
    assert np.array_equal(preprocess.canonical_orientation(frame.pixels), frame.pixels)  # Already turned.


def test_canonical_orientation_turns_by_the_mass_moment_and_settles_ties_by_the_bytes(preprocess):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    turned = preprocess.canonical_orientation(frames)
    assert np.array_equal(preprocess.canonical_orientation(frames[:, :, ::-1]), turned)
    assert np.array_equal(preprocess.canonical_orientation(turned), turned)
    assert [preprocess.canonical_orientation(frame).tolist() for frame in frames] == turned.tolist()
    heel_right = np.zeros((28, 28), np.uint8)
    heel_right[20:24, 2:26], heel_right[10:20, 18:26] = 200, 200  # A boot's sole and shaft, toe left.
    assert np.array_equal(preprocess.canonical_orientation(heel_right), heel_right)
    assert np.array_equal(preprocess.canonical_orientation(heel_right[:, ::-1]), heel_right)
    tie = np.zeros((28, 28), np.uint8)
    tie[5, 3], tie[6, 24] = 9, 9  # Equal masses at mirrored columns: a score of 0, and not symmetric.
    assert tie.tobytes() != tie[:, ::-1].tobytes()
    assert preprocess.canonical_orientation(tie).tobytes() == preprocess.canonical_orientation(tie[:, ::-1]).tobytes()


@pytest.mark.parametrize("width, height", [(320, 240), (224, 168)])  # 224 is padded to a 256-byte stride.
def test_yuv420_planes_of_real_photos_make_the_frames_their_rgb_makes(preprocess, width, height):
    """Picamera2's lores array (made from real photos here, as no camera is attached) is read plane by
    plane; its colour at work size gives nearly the frame the same picture gives as RGB."""
    agree = differences = 0
    for path in EVERY_PHOTO:
        rgb = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        array = picamera2_stand_in.yuv420_array(rgb, width, height)
        planes = yuv.Yuv420.from_array(array, width, height)
        assert planes.luma.shape == (height, width)
        assert planes.blue.shape == planes.red.shape == (height // 2, width // 2)
        image = planes.image()
        assert image.mode == "YCbCr" and image.size == (width, height)
        assert yuv.planes_of(image) is planes and yuv.planes_of(image.convert("RGB")) is None
        from_planes, from_rgb = preprocess.make_frame(image, None), preprocess.make_frame(image.convert("RGB"), None)
        differences += float(np.mean(np.abs(from_planes.pixels.astype(int) - from_rgb.pixels.astype(int))))
        agree += from_planes.objects == from_rgb.objects and from_planes.unsure == from_rgb.unsure
    # Measured: a mean difference of 1.2-1.5 of 255, and all agree.
    assert differences / len(EVERY_PHOTO) < 4 and agree >= 0.9 * len(EVERY_PHOTO)


def test_yuv420_to_rgb_is_jpegs_full_range_conversion():
    rng = np.random.default_rng(1)
    planes = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(3)]
    expected = np.asarray(Image.merge("YCbCr", [Image.fromarray(plane) for plane in planes]).convert("RGB"), np.int64)
    assert np.abs(yuv.to_rgb(*planes).astype(np.int64) - expected).max() <= 1  # Pillow's own rounding.


@pytest.mark.parametrize("width, height", [(320, 240), (224, 168)])
def test_a_camera_image_is_its_planes_merged_at_the_lumas_size(width, height):
    """Yuv420.image builds the picture from whole pixel words; it is the image Pillow makes of the planes,
    each chroma plane resized to the luma's size by nearest pixels, byte for byte."""
    for path in EVERY_PHOTO[:12]:
        planes = yuv.Yuv420.from_array(picamera2_stand_in.yuv420_array(Image.open(path), width, height), width, height)
        size = (width, height)
        bands = [Image.fromarray(np.ascontiguousarray(planes.luma))]
        bands += [Image.fromarray(np.ascontiguousarray(plane)).resize(size, Image.Resampling.NEAREST)
                  for plane in (planes.blue, planes.red)]
        expected = Image.merge("YCbCr", bands)
        image = planes.image()
        assert (image.mode, image.size) == (expected.mode, expected.size) and image.tobytes() == expected.tobytes()
