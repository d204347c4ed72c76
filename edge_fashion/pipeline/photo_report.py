"""A build's models on labelled photos: accuracy overall and per class, float and int8, and a contact
sheet of what the model saw; the `photos` part of report.json and its section of report.md."""

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from edge_fashion.pipeline import data, evaluate, photos as photos_module

NO_FRAME = -1  # The prediction of a photo in which preprocessing found no garment: always wrong.
THUMBNAIL = 96  # Pixels of the photo's longer side on the contact sheet.
ZOOM = 3  # The 28x28 frame is drawn this many times larger.
PER_CLASS = 6  # Photos per class on the contact sheet, wrong ones first.
TITLES = {"held_out": "held-out photos (not trained on)", "evaluated": "photos evaluated"}


# Pure numpy: predictions in, figures out.

def photo_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Right answers overall and per class; a photo without a frame counts as a wrong answer."""
    per_class = []
    for index in range(len(data.LABELS)):
        members = labels == index
        count, correct = int(members.sum()), int((predictions[members] == index).sum())
        per_class.append({"count": count, "correct": correct, "accuracy": correct / count if count else None})
    correct = int((predictions == labels).sum())
    return {"count": len(labels), "correct": correct, "accuracy": correct / len(labels) if len(labels) else None,
            "no_frame": int((predictions == NO_FRAME).sum()), "per_class": per_class}


# Interpreter I/O and the section of report.json.

def model_answers(content: bytes, photos: photos_module.Photos) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, top scores) of a TFLite model, (N,) each; NO_FRAME and 0 where there was no frame."""
    framed = photos.framed
    predictions, scores = np.full(len(photos), NO_FRAME, dtype=np.int64), np.zeros(len(photos))
    if framed.any():
        probabilities = evaluate.run_tflite(content, photos.frames[framed])
        predictions[framed], scores[framed] = probabilities.argmax(axis=1), probabilities.max(axis=1)
    return predictions, scores


def evaluate_photos(float_content: bytes, int8_content: bytes, photos: photos_module.Photos,
                    folders: list, sheet_name: str) -> tuple[dict, Image.Image]:
    """(report section, contact sheet of the int8 answers) for both models on `photos`."""
    float_predictions, _ = model_answers(float_content, photos)
    int8_predictions, int8_scores = model_answers(int8_content, photos)
    section = {"photos": len(photos), "folders": [str(folder) for folder in folders], "contact_sheet": sheet_name,
               "float": photo_metrics(photos.labels, float_predictions),
               "int8": photo_metrics(photos.labels, int8_predictions)}
    return section, contact_sheet(photos, int8_predictions, int8_scores)


def summary_line(section: dict, title: str) -> str:
    """'TITLE int8 61.0% (122 of 200), float 60.5%'."""
    return (f"{title} int8 {percent(section['int8']['accuracy'])} ({section['int8']['correct']} of "
            f"{section['photos']}), float {percent(section['float']['accuracy'])}")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# Pictures and text.

def training_sentence(training: dict) -> str:
    """How the photos trained, in words."""
    sources = [f"{training['stock']:,} stock photos"] if training.get("stock") else []
    if training["folders"]:
        sources.append(f"{training['train']:,} of yours from {', '.join(training['folders'])}")
    text = (f"Trained with {' and '.join(sources)}, filling {100 * training['photo_share']:.0f}% of each batch "
            f"({100 * training['photo_balance']:.0f}% of those places spread evenly over the classes).")
    if training["folders"]:
        text += (f" {training['held_out']:,} of yours held out ({100 * training['held_out_share']:.0f}% of each "
                 "class, seeded).")
    return text


def sheet_rows(labels: np.ndarray, predictions: np.ndarray) -> list[list[int]]:
    """A row per class that has photos: up to PER_CLASS of them, the wrong ones first."""
    rows = []
    for index in range(len(data.LABELS)):
        members = np.flatnonzero(labels == index)
        wrong = members[predictions[members] != index]
        right = members[predictions[members] == index]
        if len(members):
            rows.append([int(member) for member in np.concatenate([wrong, right])[:PER_CLASS]])
    return rows


def tile(path: pathlib.Path, frame: np.ndarray, true: str, answer: str, right: bool, font) -> Image.Image:
    """One photo: its thumbnail, the 28x28 frame the model saw, the true label and the answer."""
    side = 28 * ZOOM
    image = Image.new("RGB", (THUMBNAIL + side + 12, THUMBNAIL + 30), "white")  # As contact_sheet's cells.
    with Image.open(path) as photo:
        thumbnail = ImageOps.exif_transpose(photo).convert("RGB")
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    image.paste(thumbnail, (2, 2))
    image.paste(Image.fromarray(frame).resize((side, side), Image.Resampling.NEAREST).convert("RGB"),
                (THUMBNAIL + 8, 2))
    draw = ImageDraw.Draw(image)
    draw.text((2, THUMBNAIL + 4), true[:30], fill="black", font=font)
    draw.text((2, THUMBNAIL + 16), answer[:30], fill=(0, 128, 0) if right else (200, 0, 0), font=font)
    return image


def contact_sheet(photos: photos_module.Photos, predictions: np.ndarray, scores: np.ndarray) -> Image.Image:
    """A grid of tiles, a row per class (up to PER_CLASS photos, the wrong ones first)."""
    font, rows = ImageFont.load_default(), sheet_rows(photos.labels, predictions)
    width, height = THUMBNAIL + 28 * ZOOM + 12, THUMBNAIL + 30
    sheet = Image.new("RGB", (PER_CLASS * width, max(1, len(rows)) * height), "white")
    for row, members in enumerate(rows):
        for column, index in enumerate(members):
            prediction = int(predictions[index])
            answer = ("-> no garment found" if prediction == NO_FRAME
                      else f"-> {data.LABELS[prediction]} {scores[index]:.2f}")
            image = tile(photos.paths[index], photos.frames[index], data.LABELS[photos.labels[index]],
                         answer, prediction == photos.labels[index], font)
            sheet.paste(image, (column * width, row * height))
    return sheet


def markdown(photos_report: dict) -> str:
    """The 'Real photos' section of report.md."""
    lines = ["## Real photos", ""]
    training = photos_report.get("training")
    if training:
        lines += [training_sentence(training), ""]
    for key, title in TITLES.items():
        section = photos_report.get(key)
        if not section:
            continue
        lines += [f"### {title[0].upper() + title[1:]}: {', '.join(section['folders'])}", "",
                  "| class | photos | float | int8 |", "| --- | --- | --- | --- |"]
        for index, name in enumerate(data.LABELS):
            count = section["int8"]["per_class"][index]["count"]
            if count:
                lines.append(f"| {name} | {count} | {percent(section['float']['per_class'][index]['accuracy'])} "
                             f"| {percent(section['int8']['per_class'][index]['accuracy'])} |")
        lines += [f"| all | {section['photos']} | {percent(section['float']['accuracy'])} "
                  f"| {percent(section['int8']['accuracy'])} |", "",
                  f"{section['int8']['no_frame']} photos gave no frame (counted wrong). Each tile: the photo, "
                  "the 28x28 frame the model saw, the true class, the int8 answer (green right, red wrong).", "",
                  f"![{key}]({section['contact_sheet']})", ""]
    return "\n".join(lines)
