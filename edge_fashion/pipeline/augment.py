"""Camera augmentation: Fashion-MNIST images made to look like what the board's preprocessing makes of photos.

The board cuts a garment out of a photo by its colour distance from the background, trims it, scales
its longest side to 28 and stretches it to full brightness (device/fashion_board/preprocess.py). On
real photos that frame differs from the data set's in known ways: the crop is loose, clipped or off
centre, the garment is turned a little or mirrored, background texture is left around it, a plain
garment becomes a flat silhouette, a print or a fold a bright patch, and contrast, gamma and
sharpness vary. Each is drawn here per image on (B, 28, 28) float32 batches, from stateless random
ops with one seed a batch (same seed, same images on the CPU), for a share of the images only, so that
the clean data set's accuracy keeps its bar; only that share is computed.
"""

import math

import tensorflow as tf

SIDE = 28
# What each image of a training batch is (camera()'s `kinds`): each kind has its own share of changes.
DATASET, PHOTO, STAND_IN = 0, 1, 2


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
    blurred = blur(images)
    weight = uniform(seeds[2], size, 0, config.augment_blur)[:, tf.newaxis, tf.newaxis]
    images = (1 - weight) * images + weight * blurred
    noise = tf.random.stateless_normal(tf.shape(images), seeds[3]) * config.augment_noise
    return tf.clip_by_value(images + noise * tf.cast(images > 0, tf.float32), 0, 255)


def blur(images: tf.Tensor) -> tf.Tensor:
    """The 3x3 binomial blur ([1, 2, 1] / 4 each way, zeros beyond the edge) by shifted sums: on a
    2-core CPU ten times faster than a 1-channel conv2d."""
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1]])
    rows = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4
    return (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) / 4


def stretch(images: tf.Tensor) -> tf.Tensor:
    """Brightest pixel to 255, as the board's preprocessing does to every frame."""
    peak = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    return tf.where(peak > 0, images * 255 / tf.maximum(peak, 1e-3), images)


def camera(images: tf.Tensor, labels: tf.Tensor, config, seed: tf.Tensor, kinds: tf.Tensor | None = None) -> tf.Tensor:
    """(B, 28, 28) float32 0-255 images, (B,) int64 labels: a share of them made camera-like, by kind
    ((B,) int32, DATASET without it): `config.augment_camera` of the data set's images,
    `config.augment_photos` of the photos, every stand-in (a data set's image drawn in a photo's place)."""
    shares = tf.constant([config.augment_camera, config.augment_photos, 1.0], tf.float32)
    if kinds is None:
        if config.augment_camera <= 0:
            return images  # Nothing would be changed: skip the work.
        kinds = tf.zeros(tf.shape(labels), tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    chosen = tf.random.stateless_uniform((tf.shape(images)[0],), seeds[3]) < tf.gather(shares, kinds)
    where = tf.where(chosen)  # (M, 1) int64: only these are computed.
    picked = tf.gather_nd(images, where)
    changed = stretch(residue(tone(geometry(picked, tf.gather_nd(labels, where), config, seeds[0]), config, seeds[1]),
                              config, seeds[2]))
    return tf.tensor_scatter_nd_update(images, where, changed)
