"""The board's frames of real photos (tests/photos, tests/preprocess_photos) keep their bytes, their doubt and
their objects count, as files and as camera frames, under the host's numpy and the board's: speed work on the
preprocessing must change none of them. A deliberate change of the frames regenerates the digests with
`python tests/frame_golden.py --write` (and says why in its commit)."""

import json
import subprocess

import frame_golden


def differences(found: dict) -> list:
    golden = json.loads(frame_golden.GOLDEN.read_text())
    assert found.keys() == golden.keys()
    return [(name, kind) for name in golden for kind in golden[name] if found[name][kind] != golden[name][kind]]


def test_the_frames_keep_their_digests():
    assert differences(frame_golden.digests(frame_golden.FOLDERS)) == []


def test_the_frames_keep_their_digests_on_the_board(device_python):
    board = subprocess.run([str(device_python), str(frame_golden.REPO / "tests" / "frame_golden.py")],
                           capture_output=True, text=True, timeout=300, check=True)
    assert differences(json.loads(board.stdout)) == []
