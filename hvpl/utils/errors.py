"""The one exception type the CLI turns into a clean message and a non-zero exit."""


class HVPLError(Exception):
    """A user-facing error: bad input file, bad config, bad arguments.

    The message must name the file and the offending entry, e.g.
    ``HVPLError("results.json: entry 3: video_id 17 is not in the ground truth gt.json")``.
    """
