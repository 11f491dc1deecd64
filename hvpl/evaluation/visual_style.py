"""Defaults and drawing style of ``hvpl visualize`` (hvpl/evaluation/visualize.py), kept free of imports so the
CLI can show them in its help without loading numpy and Pillow."""

DEFAULT_COLUMNS = 8      # frames drawn per row at most
DEFAULT_HEIGHT = 160     # drawn frame height in pixels
DEFAULT_VIDEOS = 4       # videos picked when none are named
ALPHA = 0.45             # overlay opacity inside a mask
LABEL_WIDTH = 150        # left margin holding the row labels
HEADER_HEIGHT = 18       # top margin holding the frame indices
TEXT_PAD = 2
GIF_FRAME_MS = 200
GIF_COLOURS = 256
PNG_COMPRESSION = 1     # zlib level: level 6 (the default) takes ~4x longer on a 720p grid for ~20% less
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
# Distinct colours (Okabe-Ito and Tableau hues); track j of a row gets PALETTE[j % len(PALETTE)].
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (148, 103, 189), (140, 86, 75), (127, 127, 127), (188, 189, 34), (23, 190, 207))
