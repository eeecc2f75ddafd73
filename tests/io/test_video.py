import sys

import numpy as np
import pytest

from openlsm.errors import OpenLSMError
from openlsm.io.outputs import save_video


def test_video_without_imageio_ffmpeg_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now raises ImportError
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    with pytest.raises(OpenLSMError, match="imageio-ffmpeg"):
        save_video(tmp_path / "v.mp4", frames)
    assert list(tmp_path.iterdir()) == []


def test_video_is_written_with_odd_sizes_padded(tmp_path):
    import imageio.v3 as iio

    frames = [np.full((9, 7, 3), 40 * i, np.uint8) for i in range(3)]
    path = save_video(tmp_path / "v.mp4", frames, fps=5)
    back = iio.imread(path)
    assert back.shape == (3, 10, 8, 3) and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
