"""Training: on a GPU when TensorFlow sees one, else the CPU; keeps the best epoch by validation accuracy."""

import dataclasses
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from edge_fashion import config as config_module
from edge_fashion.pipeline import augment as augment_module
from edge_fashion.pipeline import data
from edge_fashion.pipeline import model as model_module
from fashion_board import preprocess


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    history: dict | None  # Per-epoch lists: loss, accuracy, val_loss, val_accuracy, seconds.
    best_epoch: int | None  # 1-based.
    best_validation_accuracy: float | None
    device: str  # What trained, in words ("CPU (2 cores)", "GPU: NVIDIA H100").
    seconds: float
    seed: int | None = None  # None for a model whose training left no record.
    images: int | None = None  # Images trained on, counted once per epoch that drew them.

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds else None

    def record(self) -> dict:
        """What train.json and the report keep of the training: everything but the model."""
        return {"device": self.device, "seconds": self.seconds, "seed": self.seed, "best_epoch": self.best_epoch,
                "best_validation_accuracy": self.best_validation_accuracy, "history": self.history,
                "images": self.images}


@dataclasses.dataclass(frozen=True)
class Split:
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) uint8
    validation_images: np.ndarray
    validation_labels: np.ndarray
    # Frames of real photos for training (the stock set and the user's --photos), drawn into a share
    # of each batch (epoch_draws).
    photo_images: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    photo_labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint8))


def make_split(config: config_module.BuildConfig, dataset: data.Dataset) -> Split:
    """Stratified, seeded 55,000/5,000 split of the training images; optionally a smaller train part."""
    train, validation = data.split_train_validation(dataset.train_labels, config.validation_size, config.seed)
    if config.train_limit is not None and config.train_limit < len(train):
        train = train[data.stratified_indices(dataset.train_labels[train], config.train_limit, config.seed)]
    return Split(dataset.train_images[train], dataset.train_labels[train],
                 dataset.train_images[validation], dataset.train_labels[validation])


def select_strategy(device: str) -> tuple[tf.distribute.Strategy, str]:
    """Pick where to train: `auto` takes the GPUs when there are any, `cpu` hides them, `gpu` needs one."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ValueError("--device gpu: TensorFlow sees no GPU (check the CUDA driver and "
                         "`pip install tensorflow[and-cuda]`), or use --device cpu")
    if device == "cpu" or not gpus:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return tf.distribute.get_strategy(), f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), f"{len(gpus)} GPUs: {', '.join(names)}"
    return tf.distribute.OneDeviceStrategy("/gpu:0"), f"GPU: {names[0]}"


def seed_everything(seed: int) -> None:
    """Same seed, same model on the CPU: seeds Python, numpy and TensorFlow, deterministic kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


SCHEDULES = ("cosine", "one-cycle")
ONE_CYCLE_WARMUP = 0.3  # Share of the steps spent warming up in the one-cycle schedule.


def make_schedule(config: config_module.BuildConfig, steps_per_epoch: int):
    """A linear warm-up to the peak rate, then cosine decay to zero (see `BuildConfig.schedule`)."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {config.schedule!r}")
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "one-cycle":
        warmup_steps, start = int(ONE_CYCLE_WARMUP * total_steps), config.learning_rate / 25
    else:
        warmup_steps = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
        start = config.learning_rate / 10
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=start if warmup_steps else config.learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(config: config_module.BuildConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW on the schedule, keeping a moving average of the weights when `ema_momentum` > 0."""
    return keras.optimizers.AdamW(
        learning_rate=make_schedule(config, steps_per_epoch), weight_decay=config.weight_decay,
        use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum or 0.99,
    )


# Augmentation on whole batches inside tf.data, from stateless random ops with per-batch seeds,
# so the same seed gives the same images on the CPU.

def shift(images: tf.Tensor, pixels: int, seed: tf.Tensor) -> tf.Tensor:
    """Move each (28, 28) image by its own random offset of up to `pixels` each way, filling with 0."""
    padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels]])
    offsets = tf.random.stateless_uniform((tf.shape(images)[0], 2), seed, 0, 2 * pixels + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(28)[tf.newaxis]  # (B, 28)
    columns = offsets[:, 1:] + tf.range(28)[tf.newaxis]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, 28, 28 + 2 * pixels)
    return tf.gather(images, columns, axis=2, batch_dims=1)


def flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirror a random half of the images left to right."""
    mirrored = tf.random.stateless_uniform((tf.shape(images)[0],), seed) < 0.5
    return tf.where(mirrored[:, tf.newaxis, tf.newaxis], tf.reverse(images, [2]), images)


def mixup(images: tf.Tensor, targets: tf.Tensor, alpha: float, seed: tf.Tensor):
    """Blend each image and target with the batch's mirror image, weight drawn from Beta(alpha, alpha)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    size = (tf.shape(images)[0],)
    draws = [tf.random.stateless_gamma(size, seeds[part], alpha) for part in (0, 1)]
    weight = draws[0] / (draws[0] + draws[1])  # (B,)

    def blend(values, weights):
        return weights * values + (1 - weights) * tf.reverse(values, [0])
    return blend(images, weight[:, tf.newaxis, tf.newaxis]), blend(targets, weight[:, tf.newaxis])


def augment(config: config_module.BuildConfig, images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor,
            kinds: tf.Tensor | None = None):
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shift_seed, flip_seed, mixup_seed = seeds[0], seeds[1], seeds[2]
    images = augment_module.camera(images, tf.argmax(targets, axis=1), config, seeds[3], kinds)
    if config.shift_pixels > 0:
        images = shift(images, config.shift_pixels, shift_seed)
    if config.flip:
        images = flip(images, flip_seed)
    if config.mixup > 0:
        images, targets = mixup(images, targets, config.mixup, mixup_seed)
    return board_orientation(images), targets


def board_orientation(images: tf.Tensor) -> tf.Tensor:
    """(B, 28, 28) float32 images as the board would turn them were they its frames: rounded to
    uint8 and put through the board's own canonical_orientation (a warp or a shift can move a
    garment's mass across the middle)."""
    frames = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
    turned = tf.numpy_function(preprocess.canonical_orientation, [frames], tf.uint8, stateful=False)
    return tf.cast(tf.ensure_shape(turned, images.shape), tf.float32)


def steps_per_epoch(config: config_module.BuildConfig, split: Split) -> int:
    """An epoch is as many batches as the data set's training images fill, photos or not."""
    return -(-len(split.train_labels) // config.batch_size)


def photo_slots(config: config_module.BuildConfig, split: Split) -> int:
    """Places in each batch that photos fill (none without photos)."""
    return round(config.photo_share * config.batch_size) if len(split.photo_labels) else 0


def class_shares(config: config_module.BuildConfig, split: Split) -> np.ndarray:
    """(10,) share of the photo places each class gets: `photo_balance` of them evenly, the rest as
    the photos' own classes fall. A class without photos (no photo shows a bag) keeps its even part,
    and a data set image of it, camera-augmented, stands in for the photo."""
    counts = np.bincount(split.photo_labels, minlength=len(data.LABELS))
    return config.photo_balance / len(counts) + (1 - config.photo_balance) * counts / max(1, counts.sum())


def epoch_draws(config: config_module.BuildConfig, split: Split, rng: np.random.Generator):
    """One epoch's batches: (steps, batch) int32 indices into the training images followed by the
    photos, and (steps, batch) int32 kinds (augment.DATASET, PHOTO or STAND_IN).

    Each batch holds the same number of photo places, drawn class by class_shares; the rest take the
    data set's images in a fresh random order."""
    steps, size, slots = steps_per_epoch(config, split), config.batch_size, photo_slots(config, split)
    count = len(split.train_labels)
    order = np.concatenate([rng.permutation(count) for _ in range(-(-steps * (size - slots) // count))])
    indices = np.empty((steps, size), np.int32)
    kinds = np.full((steps, size), augment_module.DATASET, np.int32)
    indices[:, slots:] = order[:steps * (size - slots)].reshape(steps, size - slots)
    if not slots:
        return indices, kinds
    classes = rng.choice(len(data.LABELS), size=(steps, slots), p=class_shares(config, split))
    for label in range(len(data.LABELS)):
        places = classes == label
        photos = np.flatnonzero(split.photo_labels == label)
        if len(photos):
            indices[:, :slots][places] = count + photos[rng.integers(len(photos), size=int(places.sum()))]
            kinds[:, :slots][places] = augment_module.PHOTO
        else:
            images = np.flatnonzero(split.train_labels == label)
            indices[:, :slots][places] = rng.choice(images, size=int(places.sum())) if len(images) else 0
            kinds[:, :slots][places] = augment_module.STAND_IN
    return indices, kinds


def all_draws(config: config_module.BuildConfig, split: Split):
    """epoch_draws for every epoch, seeded: (epochs * steps, batch) indices and kinds."""
    rng = np.random.default_rng(config.seed)
    draws = [epoch_draws(config, split, rng) for _ in range(config.epochs)]
    return np.concatenate([indices for indices, _ in draws]), np.concatenate([kinds for _, kinds in draws])


def drawn_images(split: Split, indices: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8: the images one epoch draws, for the statistics batch norm is folded with."""
    return np.concatenate([split.train_images, split.photo_images])[indices.ravel()]


def training_dataset(config: config_module.BuildConfig, split: Split, draws=None) -> tf.data.Dataset:
    """Augmented batches of (float32 pixels, one-hot targets), epoch after epoch as `draws` (all_draws) say."""
    indices, kinds = draws if draws is not None else all_draws(config, split)
    images = tf.constant(np.concatenate([split.train_images, split.photo_images]))
    targets = tf.constant(one_hot(np.concatenate([split.train_labels, split.photo_labels])))
    batches = tf.data.Dataset.from_tensor_slices((indices, kinds)).repeat()
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2)  # One stateless seed per batch.

    def gather(batch, seed):
        chosen, kind = batch
        return augment(config, tf.cast(tf.gather(images, chosen), tf.float32), tf.gather(targets, chosen), seed, kind)
    return tf.data.Dataset.zip(batches, seeds).map(gather).prefetch(tf.data.AUTOTUNE)


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation accuracy, and each epoch's time."""

    def __init__(self):
        super().__init__()
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, 0, None
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.started)
        if logs["val_accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_epoch = float(logs["val_accuracy"]), epoch + 1
            self.best_weights = self.model.get_weights()


def train(config: config_module.BuildConfig, split: Split) -> TrainResult:
    """Train the MLP on `split` and return it at its best validation epoch."""
    seed_everything(config.seed)
    strategy, device = select_strategy(config.device)
    steps = steps_per_epoch(config, split)
    draws = all_draws(config, split)
    with strategy.scope():
        network = model_module.build_model(config)
        network.compile(
            optimizer=make_optimizer(config, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
        )
    keep_best, started = KeepBest(), time.perf_counter()
    # With a moving average, validate and keep the averaged weights (the swap must run before KeepBest).
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum > 0 else []
    fitted = network.fit(
        # The dataset shuffles itself (seeded); Keras' own shuffle would only warn.
        training_dataset(config, split, draws), steps_per_epoch=steps, shuffle=False,
        validation_data=(split.validation_images.astype(np.float32), one_hot(split.validation_labels)),
        validation_batch_size=1000, epochs=config.epochs, callbacks=[*swap, keep_best], verbose=1 if sys.stdout.isatty() else 2,
    )
    network.set_weights(keep_best.best_weights)
    if config.batch_norm:
        network = model_module.fold_batch_norm(network, drawn_images(split, draws[0][:steps]))
    history = {key: [float(value) for value in values] for key, values in fitted.history.items()}
    history["seconds"] = keep_best.epoch_seconds
    return TrainResult(network, history, keep_best.best_epoch, keep_best.best_accuracy, device,
                       time.perf_counter() - started, config.seed, config.epochs * steps * config.batch_size)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(data.LABELS), dtype=np.float32)[labels]
