"""A build's models on labelled photos: accuracy overall and per class, float and int8, and a contact
sheet of what the model saw; the `photos` part of report.json and its section of report.md."""

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from edge_fashion import pictures
from edge_fashion.pipeline import data, evaluate, photos as photos_module

NO_FRAME = -1  # The prediction of a photo in which preprocessing found no garment: always wrong.
THUMBNAIL = 96  # Pixels of the photo's longer side on the contact sheet.
ZOOM = 3  # The 28x28 frame is drawn this many times larger.
PER_CLASS = 6  # Photos per class on the contact sheet, wrong ones first.
CAPTION_SIZE = 13  # Pixels of the contact sheet's text.
GAP = 8  # Pixels between the sheet's pictures and around its text.
HEADER = 48  # Pixels of the sheet's two header lines.
SHEET_HEADER = ("int8 answers on photos, a row per class, wrong answers first.\n"
                "Each: the photo, the 28x28 frame the model saw, the answer and its score; green right, red wrong.")
RIGHT, WRONG = (0, 128, 0), (200, 0, 0)  # The colours of right and wrong answers.
NO_GARMENT = "no garment found"  # The answer shown for a photo that gave no frame.
ANSWERS = (*data.LABELS, NO_GARMENT)
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


def row_heading(index: int, labels: np.ndarray, predictions: np.ndarray) -> str:
    """'Sandal' over '1 of 4 right': the class of a row and how the model did on all its photos."""
    members = labels == index
    return f"{data.LABELS[index]}\n{int((predictions[members] == index).sum())} of {int(members.sum())} right"


def tile(path: pathlib.Path, frame: np.ndarray, answer: str, score: str, right: bool, width: int) -> Image.Image:
    """One photo: its thumbnail beside the 28x28 frame the model saw; under them the answer on the
    left and its score on the right, green when right, red when wrong."""
    side = 28 * ZOOM
    image = Image.new("RGB", (width, THUMBNAIL + CAPTION_SIZE + 10), "white")
    with Image.open(path) as photo:
        thumbnail = ImageOps.exif_transpose(photo).convert("RGB")
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    image.paste(thumbnail, ((THUMBNAIL - thumbnail.width) // 2, (THUMBNAIL - thumbnail.height) // 2))
    image.paste(Image.fromarray(frame).resize((side, side), Image.Resampling.NEAREST).convert("RGB"),
                (THUMBNAIL + GAP, (THUMBNAIL - side) // 2))
    draw, font, colour = ImageDraw.Draw(image), pictures.font(CAPTION_SIZE), RIGHT if right else WRONG
    draw.text((0, THUMBNAIL + 4), answer, fill=colour, font=font)
    draw.text((width, THUMBNAIL + 4), score, fill=colour, font=font, anchor="ra")
    return image


def tile_width(font) -> int:
    """As wide as a photo and its frame, or as the longest answer with a score beside it."""
    longest = max(font.getlength(answer + "  0.00") for answer in ANSWERS)
    return max(THUMBNAIL + GAP + 28 * ZOOM, round(longest))


def contact_sheet(photos: photos_module.Photos, predictions: np.ndarray, scores: np.ndarray) -> Image.Image:
    """A row per class that has photos, headed by its name and right answers, then up to PER_CLASS
    tiles, the wrong ones first; as many columns as the fullest row, so no column is blank."""
    rows, font = sheet_rows(photos.labels, predictions), pictures.font(CAPTION_SIZE)
    headings = [row_heading(int(photos.labels[members[0]]), photos.labels, predictions) for members in rows]
    left = 2 * GAP + max(round(font.getlength(line)) for text in (*headings, "") for line in text.split("\n"))
    width, height = tile_width(font), THUMBNAIL + CAPTION_SIZE + 10 + GAP
    columns = max([len(members) for members in rows] or [1])
    sheet_width = max(left + columns * (width + 2 * GAP), *(round(font.getlength(line)) + 2 * GAP
                                                         for line in SHEET_HEADER.split("\n")))
    sheet = Image.new("RGB", (sheet_width, HEADER + max(1, len(rows)) * height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.multiline_text((GAP, GAP), SHEET_HEADER, fill="black", font=font, spacing=4)
    for row, (members, heading) in enumerate(zip(rows, headings)):
        top = HEADER + row * height
        draw.multiline_text((GAP, top + THUMBNAIL // 3), heading, fill="black", font=font, spacing=4)
        for column, index in enumerate(members):
            prediction = int(predictions[index])
            answer, score = ((NO_GARMENT, "") if prediction == NO_FRAME
                             else (data.LABELS[prediction], f"{scores[index]:.2f}"))
            image = tile(photos.paths[index], photos.frames[index], answer, score,
                         prediction == photos.labels[index], width)
            sheet.paste(image, (left + column * (width + 2 * GAP), top))
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
                  f"{section['int8']['no_frame']} photos gave no frame (counted wrong). A row per class, the "
                  "wrong answers first; each photo beside the 28x28 frame the model saw, under them the int8 "
                  "answer and its score (green right, red wrong).", "",
                  f"![{key}]({section['contact_sheet']})", ""]
    return "\n".join(lines)
