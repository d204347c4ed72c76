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
from edge_fashion import data
from edge_fashion import model as model_module


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    history: dict  # Per-epoch lists: loss, accuracy, val_loss, val_accuracy, seconds.
    best_epoch: int  # 1-based.
    best_validation_accuracy: float
    device: str  # What trained, in words ("CPU (2 cores)", "GPU: NVIDIA H100").
    seconds: float


@dataclasses.dataclass(frozen=True)
class Split:
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) uint8
    validation_images: np.ndarray
    validation_labels: np.ndarray


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


def make_optimizer(config: config_module.BuildConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW with a linear warm-up to the peak rate, then cosine decay to zero."""
    warmup_steps = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup_steps else config.learning_rate,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup_steps),
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)


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
    steps_per_epoch = -(-len(split.train_labels) // config.batch_size)
    with strategy.scope():
        network = model_module.build_model(config)
        network.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
        )
    keep_best, started = KeepBest(), time.perf_counter()
    fitted = network.fit(
        split.train_images.astype(np.float32), one_hot(split.train_labels),
        validation_data=(split.validation_images.astype(np.float32), one_hot(split.validation_labels)),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
        callbacks=[keep_best], verbose=1 if sys.stdout.isatty() else 2,
    )
    network.set_weights(keep_best.best_weights)
    history = {key: [float(value) for value in values] for key, values in fitted.history.items()}
    history["seconds"] = keep_best.epoch_seconds
    return TrainResult(network, history, keep_best.best_epoch, keep_best.best_accuracy,
                       device, time.perf_counter() - started)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(data.LABELS), dtype=np.float32)[labels]
