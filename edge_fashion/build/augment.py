"""Camera augmentation: Fashion-MNIST images made to look like what the board's preprocessing makes of photos.

The board cuts a garment out of a photo by its colour distance from the background, trims it, scales
its longest side to 28 and stretches it to full brightness (device/fashion_board/preprocess.py). On
real photos that frame differs from the data set's in known ways: the crop is loose, clipped or off
centre, the garment is turned a little or mirrored, background texture is left around it, a plain
garment becomes a flat silhouette, a print or a fold a bright patch, and contrast, gamma and
sharpness vary. Each is drawn here per image on whole (B, 28, 28) float32 batches, from stateless
random ops with one seed a batch (same seed, same images on the CPU), for a share of the images only,
so that the clean data set's accuracy keeps its bar.
"""

import math

import tensorflow as tf

SIDE = 28


def uniform(seed: tf.Tensor, size: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform((size,), seed, low, high)


def geometry(images: tf.Tensor, labels: tf.Tensor, config, seed: tf.Tensor) -> tf.Tensor:
    """Zoom (loose or clipped crops), a change of width against height (a garment laid flat, spread
    or folded), shift (off centre), small rotations and mirroring, in one warp.

    Mirroring only for the classes in `config.augment_flip_classes`; the warp fills with black.
    """
    size = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    zoom = tf.exp(uniform(seeds[0], size, -math.log(config.augment_zoom), math.log(config.augment_zoom)))
    angle = uniform(seeds[1], size, -1.0, 1.0) * config.augment_rotation * math.pi / 180
    shifts = [uniform(seeds[index], size, -config.augment_shift, config.augment_shift) for index in (2, 3)]
    allowed = tf.reduce_any(labels[:, tf.newaxis] == tf.constant(config.augment_flip_classes or (-1,), tf.int64), 1)
    mirror = tf.where(allowed & (uniform(seeds[4], size, 0, 1) < 0.5), -1.0, 1.0)
    # The transform maps each output pixel to the input pixel it reads: centre, un-rotate, un-zoom, mirror.
    centre = (SIDE - 1) / 2
    cosine, sine = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Widen (or narrow) the output by `aspect`: the input's x is read at x / aspect.
    aspect = tf.exp(uniform(seeds[5], size, -math.log(config.augment_aspect), math.log(config.augment_aspect)))
    a0, a1, b0, b1 = cosine * mirror / aspect, -sine, sine * mirror / aspect, cosine
    a2 = centre - a0 * (centre + shifts[0]) - a1 * (centre + shifts[1])
    b2 = centre - b0 * (centre + shifts[0]) - b1 * (centre + shifts[1])
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images[..., tf.newaxis], transforms=transforms, output_shape=[SIDE, SIDE],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return warped[..., 0]


def extent(images: tf.Tensor, axis: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(first, last) index along `axis` (1: columns, 2: rows) where a (B, H, W) batch has garment
    (over 30), as float (B,); (0, 0) for an empty image."""
    present = tf.reduce_any(images > 30, axis=axis)  # (B, L)
    length = tf.shape(present)[1]
    first = tf.argmax(tf.cast(present, tf.int32), axis=1, output_type=tf.int32)
    last = length - 1 - tf.argmax(tf.cast(tf.reverse(present, [1]), tf.int32), axis=1, output_type=tf.int32)
    empty = ~tf.reduce_any(present, axis=1)
    return tf.cast(tf.where(empty, 0, first), tf.float32), tf.cast(tf.where(empty, 0, last), tf.float32)


def transform(images: tf.Tensor, rows: list, side: int) -> tf.Tensor:
    """ImageProjectiveTransformV3 of a (B, H, W) batch: rows [a0, a1, a2, b0, b1, b2] of (B,) tensors
    map each output pixel (x, y) to the input (a0 x + a1 y + a2, b0 x + b1 y + b2); black outside."""
    zeros = tf.zeros_like(rows[0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images[..., tf.newaxis], transforms=tf.stack([*rows, zeros, zeros], axis=1),
        output_shape=[side, side], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[..., 0]


def spread_sleeves(images: tf.Tensor, labels: tf.Tensor, config, seed: tf.Tensor) -> tf.Tensor:
    """Long sleeves swung out from the shoulders, as a pullover, shirt or coat laid flat: the data set
    shows them hanging beside the body. For a share `config.augment_sleeves` of the images of
    `config.augment_sleeve_classes`, the outer fifth of the garment on each side turns about its
    shoulder by up to `config.augment_sleeve_angle` degrees, on a canvas twice the size; the result is
    trimmed and scaled back to 28 as the board trims and scales a photo's garment."""
    size, big, margin = tf.shape(images)[0], 2 * SIDE, SIDE / 2
    seeds = tf.random.experimental.stateless_split(seed, 2)
    left, right = extent(images, 1)
    top, _ = extent(images, 2)
    sleeve = 0.2 * (right - left + 1)
    angle = uniform(seeds[0], size, 0, config.augment_sleeve_angle * math.pi / 180)
    ones, zeros = tf.ones_like(angle), tf.zeros_like(angle)
    columns = tf.range(big, dtype=tf.float32)[tf.newaxis, tf.newaxis, :] - margin  # (1, 1, 2S), input x.
    rows = tf.range(big, dtype=tf.float32)[tf.newaxis, :, tf.newaxis] - margin  # (1, 2S, 1), input y.
    column = lambda values: values[:, tf.newaxis, tf.newaxis]  # noqa: E731 (B,) -> (B, 1, 1)
    body = transform(images, [ones, zeros, -margin * ones, zeros, ones, -margin * ones], big)
    parts = [tf.where((columns >= column(left + sleeve)) & (columns <= column(right - sleeve)), body, 0.0)]
    for turn, pivot_x, inside in ((angle, left + sleeve, lambda x: x < column(left + sleeve)),
                                  (-angle, right - sleeve, lambda x: x > column(right - sleeve))):
        cosine, sine = tf.cos(turn), tf.sin(turn)
        pivot_y = top + 2
        # Output (x, y) reads the input at pivot + R(turn) (p - margin - pivot).
        a2 = pivot_x - cosine * (margin + pivot_x) - sine * (margin + pivot_y)
        b2 = pivot_y + sine * (margin + pivot_x) - cosine * (margin + pivot_y)
        turned = transform(images, [cosine, sine, a2, -sine, cosine, b2], big)
        source_x = column(cosine) * (columns + margin) + column(sine) * (rows + margin) + column(a2)
        parts.append(tf.where(inside(source_x), turned, 0.0))
    spread = tf.reduce_max(tf.stack(parts), axis=0)  # (B, 2S, 2S)
    # Trim and centre as the board does: a square box around the garment, its longest side to 28.
    x0, x1 = extent(spread, 1)
    y0, y1 = extent(spread, 2)
    half = tf.maximum(x1 - x0, y1 - y0) / 2 + 0.5
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    boxes = tf.stack([centre_y - half, centre_x - half, centre_y + half, centre_x + half], axis=1) / (big - 1)
    fitted = tf.image.crop_and_resize(spread[..., tf.newaxis], boxes, tf.range(size), (SIDE, SIDE))[..., 0]
    allowed = tf.reduce_any(labels[:, tf.newaxis] == tf.constant(config.augment_sleeve_classes or (-1,), tf.int64), 1)
    chosen = allowed & (uniform(seeds[1], size, 0, 1) < config.augment_sleeves) & (right > left)
    return tf.where(chosen[:, tf.newaxis, tf.newaxis], fitted, images)


def tone(images: tf.Tensor, config, seed: tf.Tensor) -> tf.Tensor:
    """Gamma and contrast changes, and flat silhouettes: a plain garment cut out of a photo has no shading."""
    size = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    gamma = tf.exp(uniform(seeds[0], size, -math.log(config.augment_gamma), math.log(config.augment_gamma)))
    toned = 255 * tf.pow(images / 255, gamma[:, tf.newaxis, tf.newaxis])
    # A silhouette: everything above a low threshold at one level, as a plain garment on a plain floor.
    level = uniform(seeds[1], size, 160, 255)[:, tf.newaxis, tf.newaxis]
    silhouette = tf.where(images > 30, level, 0.0)
    flat = (uniform(seeds[2], size, 0, 1) < config.augment_silhouette)[:, tf.newaxis, tf.newaxis]
    return tf.where(flat, silhouette, toned)


def residue(images: tf.Tensor, config, seed: tf.Tensor) -> tf.Tensor:
    """Background texture left by the cut, bright patches, blur and pixel noise."""
    size = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    # Smooth blobs: noise on a 7x7 grid, upsampled; kept where it is bright, as leftovers of a floor.
    coarse = tf.random.stateless_uniform((size, 7, 7, 1), seeds[0], 0, 1)
    blobs = tf.image.resize(coarse, (SIDE, SIDE), method="bilinear")[..., 0]
    amount = uniform(seeds[1], size, 0, config.augment_residue)[:, tf.newaxis, tf.newaxis]
    images = tf.maximum(images, tf.nn.relu(blobs - 0.5) * 2 * amount)
    # A blur of random strength: the camera's focus and the board's downscaling.
    kernel = tf.constant([[1, 2, 1], [2, 4, 2], [1, 2, 1]], tf.float32)[:, :, tf.newaxis, tf.newaxis] / 16
    blurred = tf.nn.conv2d(images[..., tf.newaxis], kernel, 1, "SAME")[..., 0]
    weight = uniform(seeds[2], size, 0, config.augment_blur)[:, tf.newaxis, tf.newaxis]
    images = (1 - weight) * images + weight * blurred
    noise = tf.random.stateless_normal(tf.shape(images), seeds[3]) * config.augment_noise
    return tf.clip_by_value(images + noise * tf.cast(images > 0, tf.float32), 0, 255)


def stretch(images: tf.Tensor) -> tf.Tensor:
    """Brightest pixel to 255, as the board's preprocessing does to every frame."""
    peak = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    return tf.where(peak > 0, images * 255 / tf.maximum(peak, 1e-3), images)


def camera(images: tf.Tensor, labels: tf.Tensor, config, seed: tf.Tensor, is_photo: tf.Tensor | None = None) -> tf.Tensor:
    """(B, 28, 28) float32 0-255 images, (B,) int64 labels: a share `config.augment_camera` of the
    data set's images and a share `config.augment_photos` of the user's photos (`is_photo`, (B,)
    bool) made camera-like."""
    if config.augment_camera <= 0 and config.augment_photos <= 0:
        return images
    if is_photo is None:
        is_photo = tf.zeros(tf.shape(labels), tf.bool)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shaped = images
    if config.augment_sleeves > 0:
        shaped = spread_sleeves(images, labels, config, tf.random.experimental.stateless_fold_in(seed, 4))
    changed = stretch(residue(tone(geometry(shaped, labels, config, seeds[0]), config, seeds[1]), config, seeds[2]))
    share = tf.where(is_photo, config.augment_photos, config.augment_camera)
    chosen = tf.random.stateless_uniform((tf.shape(images)[0],), seeds[3]) < share
    return tf.where(chosen[:, tf.newaxis, tf.newaxis], changed, images)
