"""TileGrid, the canvas training's sample grids and generate's grid.png are pasted into."""

import numpy as np
import pytest
import torch

from culturegan.data.images import TileGrid
from culturegan.training.samples import grid


def test_a_near_square_grid_is_filled_row_by_row():
    canvas = TileGrid.near_square(5, (2, 3))  # 3 columns, 2 rows, the last place left black
    for index, value in enumerate((1, 2, 3, 4, 5)):
        canvas.paste(index, np.full((2, 3), value, np.uint8))
    assert canvas.pixels.shape == (4, 9)
    assert canvas.pixels[::2, ::3].tolist() == [[1, 2, 3], [4, 5, 0]]


def test_tiles_of_another_shape_or_past_the_end_are_refused():
    canvas = TileGrid(2, 2, (2, 2, 3))
    with pytest.raises(ValueError, match=r"tile 0 of shape \(2, 2\): this grid holds 2 tiles of shape \(2, 2, 3\)"):
        canvas.paste(0, np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="tile 2 of shape"):
        canvas.paste(2, np.zeros((2, 2, 3), np.uint8))


def test_sample_grids_have_white_gaps_between_rows_of_tiles():
    rows = [[torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)], [torch.zeros(3, 2, 2)] * 2]
    image = grid(rows)
    assert image.shape == (6, 6, 3)  # 2 x 2 tiles of 2 px, 2 px gaps
    assert image[0, 0].tolist() == [0, 0, 0] and image[0, 4].tolist() == [255, 255, 255]
    assert image[4, 0].tolist() == [128, 128, 128] and (image[2:4] == 255).all() and (image[:, 2:4] == 255).all()
