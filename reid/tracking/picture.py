"""Pictures of the tracks: each id's boxes in a colour of its own on the frames, as a strip of a few frames side
by side (OUT/<sequence>.jpg) or as a video of every frame (OUT/<sequence>.mp4). Frames are OpenCV BGR arrays.
"""
import colorsys

import numpy as np

STRIP_FRAMES = 4      # frames of the strip, spread evenly over the sequence
STRIP_HEIGHT = 360    # each frame of the strip is scaled to this height


def id_colour(track_id):
    """Return a BGR colour for `track_id`: hues a golden-ratio step apart, so neighbouring ids look different."""
    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(255 * b), int(255 * g), int(255 * r)


def draw_tracks(image, tracks):
    """Return a copy of the BGR `image` with each (id, x1, y1, x2, y2) of `tracks` drawn: its box and its id."""
    import cv2

    out = image.copy()
    thickness = max(2, round(out.shape[0] / 300))
    for track_id, *box in tracks:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = id_colour(int(track_id))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        cv2.putText(out, str(int(track_id)), (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    thickness / 3, colour, thickness)
    return out


def strip_frames(length, count=STRIP_FRAMES):
    """Return the 1-based frames of the strip: `count` spread evenly from the first to the last."""
    return sorted({int(f) for f in np.linspace(1, length, min(count, length)).round()})


def write_strip(path, drawn):
    """Write the drawn frames (a list of BGR arrays) side by side, each scaled to STRIP_HEIGHT, as `path`."""
    import cv2

    scaled = [cv2.resize(img, (max(1, round(img.shape[1] * STRIP_HEIGHT / img.shape[0])), STRIP_HEIGHT),
                         interpolation=cv2.INTER_AREA) for img in drawn]
    gap = np.full((STRIP_HEIGHT, 8, 3), 255, np.uint8)
    parts = [p for img in scaled for p in (img, gap)][:-1]
    if not cv2.imwrite(str(path), np.concatenate(parts, axis=1)):
        raise ValueError(f'{path}: could not write the picture')


class VideoOut:
    """OUT/<sequence>.mp4 written a frame at a time (MPEG-4 part 2, what OpenCV's wheels write everywhere)."""

    def __init__(self, path, frame_rate, size):
        import cv2

        self.path = path
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), float(frame_rate), size)
        if not self.writer.isOpened():
            raise ValueError(f'{path}: OpenCV cannot write a video here')

    def add(self, image):
        self.writer.write(image)

    def close(self):
        self.writer.release()
