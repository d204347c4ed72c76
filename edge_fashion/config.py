"""Every default of a build in one place: `BuildConfig`, and named presets that override it."""

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    # Where the four IDX files are; None searches the usual places (see data.find_data_dir).
    data_dir: pathlib.Path | None = None
    # Where every artifact goes; a failed build never overwrites what is already there.
    out_dir: pathlib.Path = pathlib.Path("artifacts")
    # Seeds the split, the weights, dropout and shuffling: same seed on the CPU, same model.
    seed: int = 42
    # Held out of the 60,000 training images for choosing the best epoch; never the test set.
    validation_size: int = 5000
    # Train on a stratified subset of this many images (None: all 55,000); for tests and quick looks.
    train_limit: int | None = None
    # "auto" trains on a GPU when TensorFlow sees one; "gpu" fails if none; "cpu" hides any GPU.
    device: str = "auto"
    # 30 epochs of AdamW with cosine decay, weight decay 0.1, label smoothing 0.1 and batch norm, no
    # dropout: see docs/accuracy.md for the 3-seed figures and every lever tried (40 and 45 epochs
    # gained at most noise on validation for 33-50% more time).
    epochs: int = 30
    batch_size: int = 128
    # Peak learning rate, reached after the warm-up.
    learning_rate: float = 2e-3
    # "cosine": linear warm-up for `warmup_epochs` from a tenth of the peak, then cosine decay to zero;
    # "one-cycle": warm-up over the first 30% of the steps from 1/25 of the peak, then cosine decay.
    schedule: str = "cosine"
    warmup_epochs: int = 1
    # AdamW's decoupled weight decay. 0.1 beat 1e-4 (which hardly acts), 0.05 and 0.2 on validation:
    # 90.35% float test over 3 seeds against 90.26%, at no cost in time (docs/accuracy.md).
    weight_decay: float = 0.1
    # Dropout after each hidden layer; training only, the exported model has none. With label
    # smoothing, 0 beat 0.1, 0.2 and 0.3 on validation (docs/accuracy.md): 30 epochs leave the
    # model short of training, not of regularisation.
    dropout: float = 0.0
    # Dropout on the 784 input pixels, training only; 0.1 lost 0.26 points of validation.
    input_dropout: float = 0.0
    # BatchNormalization after each hidden Dense while training, then folded into the Dense weights
    # with the training images' exact statistics, so the exported model is the plain MLP. It beat
    # no batch norm on validation on 2 of 3 seeds (docs/accuracy.md).
    batch_norm: bool = True
    # Softens one-hot targets; 0 turns it off. 0.1 keeps the logits small, so the int8 logit step is
    # fine (0.03 against 0.51 without) and int8 agrees with float on 99.8% of the test images, not 98.7%.
    label_smoothing: float = 0.1
    # Augmentation, training only: random shifts of up to this many pixels each way (0: none).
    shift_pixels: int = 0
    # Random horizontal flips (clothes are near-symmetric; the shoes all face left, so measure it).
    flip: bool = False
    # Mixup's Beta(alpha, alpha): blends pairs of images and their labels; 0 turns it off.
    mixup: float = 0.0
    # Camera augmentation (pipeline/augment.py): this share of each batch is made to look like what the
    # board's preprocessing makes of a phone photo; 0 turns it off. The levers below shape it. On the
    # photos' choosing part (10 epochs, seed 42) 0.3 beat 0.2, 0.4, 0.5 and 0.8 (docs/accuracy.md).
    # With augment_aspect 1.3 it keeps Fashion-MNIST's bar (90.60% float test, 3 seeds) and takes
    # the photos' reporting part from 30.9% to 42.1%, so it is the default; `--preset plain` is without.
    augment_camera: float = 0.3
    # Zoom by up to this factor either way: a loose (smaller) or clipped (larger) crop.
    augment_zoom: float = 1.25
    # Shift by up to this many pixels each way (off-centre crops), rotate by up to this many degrees.
    augment_shift: float = 3.0
    augment_rotation: float = 10.0
    # Width against height drawn between 1/augment_aspect and augment_aspect (1: off): a garment
    # laid flat with its sleeves spread is wider than the data set's, a pair of shoes wider still.
    # 1.3 beat 1 and 1.5 on the choosing part, and cost no Fashion-MNIST validation.
    augment_aspect: float = 1.3
    # Classes that may be mirrored. None: the board turns every frame one way (canonical_orientation),
    # and so does training, after the augmentation, so a mirror image would be turned back.
    augment_flip_classes: tuple = ()
    # Gamma drawn between 1/augment_gamma and augment_gamma; share turned into flat silhouettes.
    augment_gamma: float = 2.0
    augment_silhouette: float = 0.25
    # Background residue up to this brightness, blur up to this weight, pixel noise of this sd.
    augment_residue: float = 80.0
    augment_blur: float = 1.0
    augment_noise: float = 8.0
    # The same for the photos: the share of them changed as above each time they are drawn; 0 turns it off.
    augment_photos: float = 0.3
    # Momentum of an exponential moving average of the weights, which is then what is validated
    # and exported; 0 turns it off. 0.999 averages over about 1,000 steps (2.3 epochs).
    ema_momentum: float = 0.0
    # Calibration images for int8, drawn from the training split, stratified by class.
    representative_samples: int = 300
    # "converter": TFLiteConverter's post-training quantization; "ai-edge": ai-edge-quantizer
    # (gives int8 input and output, so it needs io_dtype "int8"); both gave bit-identical outputs on a
    # 30-epoch model here (docs/accuracy.md).
    quantizer: str = "converter"
    # Dense weights with one scale per output unit (True) or one per layer (False).
    per_channel: bool = True
    # The int8 model's input and output type: "uint8" feeds raw pixels, "int8" is the signed variant.
    io_dtype: str = "uint8"
    # The gate: refuse an int8 model whose test accuracy is more than this many points below float.
    max_drop: float = 0.5
    # Real photos in training (pipeline/photos.py): the stock set shipped with the toolkit
    # (edge_fashion/stock_photos: 2,344 photos of 9 classes, no bags; see its README), and the user's own.
    stock_photos: bool = True
    # Folders of the user's own labelled photos (one sub-folder per class), trained on beside the
    # stock set; a share of each class is held out and reported.
    photos: tuple[pathlib.Path, ...] = ()
    # Places in each batch that photos fill; the others take Fashion-MNIST's images. An epoch stays
    # as many batches as Fashion-MNIST's images fill, so photos cost no training time.
    photo_share: float = 0.25
    # Share of those places spread evenly over the ten classes, the rest as the photos' own classes
    # fall; a class without photos (Bag) gets its places filled with camera-augmented Fashion-MNIST
    # images, so it is not unlearned on photo-like frames.
    photo_balance: float = 0.5
    # Share of each class's photos held out of training, stratified and seeded, to report on.
    photo_held_out: float = 0.2


# Presets hold only what they change.
PRESETS: dict[str, dict] = {
    "default": {},
    "fast": {"epochs": 3},
    # Fashion-MNIST alone, with camera augmentation: the default before the stock photos.
    "fashion-mnist": {"stock_photos": False},
    # Fashion-MNIST alone, as the data set's own images look: no camera augmentation, no photos.
    "plain": {"augment_camera": 0.0, "augment_aspect": 1.0, "augment_photos": 0.0, "stock_photos": False},
}


def make_config(preset: str = "default", **overrides) -> BuildConfig:
    """Return the preset's config with `overrides` applied; None values leave the preset's value."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return dataclasses.replace(BuildConfig(), **values)


def to_json(config: BuildConfig) -> dict:
    """Return the config as JSON-ready values (paths as strings)."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        return str(value) if isinstance(value, pathlib.Path) else value
    return {key: plain(value) for key, value in dataclasses.asdict(config).items()}
