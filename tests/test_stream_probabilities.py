"""The streaming tile blender behind region and slide inference: equal to a
direct whole-canvas blend (with tiles skipped too), finished rows handed out
before the later tiles are read, blocks that tile the image once."""
import pytest
import torch

from protoprompt_mm.apis.region_inference import (array_tile_reader,
                                                  stream_probabilities,
                                                  tile_starts, tile_weights)
from test_infer_region import PerPixelModel, random_image


def direct_blend(model, image, tile, overlap, run_tile=None):
    """Reference: every run tile's weighted softmax added to a full canvas,
    divided by the summed weights (0 where no tile ran)."""
    height, width = image.shape[:2]
    rows = tile_starts(height, tile, tile - overlap)
    cols = tile_starts(width, tile, tile - overlap)
    row_windows = tile_weights(height, rows, tile, overlap)
    col_windows = tile_weights(width, cols, tile, overlap)
    canvas = torch.zeros(5, height, width, dtype=torch.float64)
    weights = torch.zeros(height, width, dtype=torch.float64)
    with torch.no_grad():
        for i, y in enumerate(rows):
            for j, x in enumerate(cols):
                if run_tile is not None and not run_tile(y, x):
                    continue
                crop = torch.from_numpy(image[y:y + tile, x:x + tile].copy())
                data = model.data_preprocessor(
                    dict(inputs=[crop.permute(2, 0, 1)]), False)
                prob = model.encode_decode(data['inputs'], None)[0].softmax(0)
                weight = row_windows[i][:, None] * col_windows[j][None, :]
                canvas[:, y:y + tile, x:x + tile] += prob * weight
                weights[y:y + tile, x:x + tile] += weight
    covered = weights > 0
    return canvas / torch.where(covered, weights, 1.0), covered


def gather(blocks, height, width):
    probs = torch.full((5, height, width), float('nan'))
    covered = torch.zeros(height, width, dtype=torch.bool)
    seen = torch.zeros(height, width, dtype=torch.int64)
    order = []
    for block in blocks:
        h, w = block.covered.shape
        probs[:, block.y:block.y + h, block.x:block.x + w] = block.probs
        covered[block.y:block.y + h, block.x:block.x + w] = block.covered
        seen[block.y:block.y + h, block.x:block.x + w] += 1
        order.append((block.y, block.x))
    assert (seen == 1).all(), 'blocks must tile the image exactly once'
    assert order == sorted(order), 'blocks must come in scan order'
    return probs, covered


@pytest.mark.parametrize('height, width, tile, overlap', [
    (300, 260, 64, 16), (190, 64, 64, 24), (130, 400, 48, 0)])
def test_stream_equals_a_direct_blend(height, width, tile, overlap):
    torch.manual_seed(0)
    model = PerPixelModel().eval()
    image = random_image(height, width, seed=3)
    probs, covered = gather(stream_probabilities(
        model, array_tile_reader(image, tile), height, width, tile, overlap,
        batch_size=3), height, width)
    expected, expected_covered = direct_blend(model, image, tile, overlap)
    assert covered.all() and expected_covered.all()
    torch.testing.assert_close(probs, expected.float(), atol=1e-5, rtol=1e-5)


def test_skipped_tiles_add_nothing_and_leave_uncovered_pixels():
    torch.manual_seed(1)
    model = PerPixelModel().eval()
    image = random_image(260, 300, seed=4)

    def run_tile(y, x):  # a checkerboard of tile rows / columns
        return (y // 48 + x // 48) % 3 != 0

    probs, covered = gather(stream_probabilities(
        model, array_tile_reader(image, 64), 260, 300, 64, 16,
        batch_size=4, run_tile=run_tile), 260, 300)
    expected, expected_covered = direct_blend(model, image, 64, 16, run_tile)
    assert torch.equal(covered, expected_covered)
    assert 0 < covered.float().mean() < 1
    torch.testing.assert_close(probs[:, covered],
                               expected.float()[:, covered], atol=1e-5,
                               rtol=1e-5)
    assert (probs[:, ~covered] == 0).all()


def test_finished_rows_come_out_before_later_tiles_are_read():
    model = PerPixelModel().eval()
    image = random_image(64 * 10, 128, seed=5)
    reads = []
    reader = array_tile_reader(image, 64)

    def read_tile(y, x):
        reads.append((y, x))
        return reader(y, x)

    blocks = stream_probabilities(model, read_tile, 640, 128, 64, 16,
                                  batch_size=2)
    first = next(blocks)
    assert (first.y, first.x) == (0, 0)
    # A batch and the one read ahead, not the 3 x 13 tiles of the image.
    assert len(reads) <= 4
    rest = list(blocks)
    assert len(reads) == len(tile_starts(640, 64, 48)) * 3 == 39
    assert rest[-1].y + rest[-1].covered.shape[0] == 640


def test_no_tile_run_gives_uncovered_blocks():
    model = PerPixelModel().eval()
    blocks = list(stream_probabilities(
        model, array_tile_reader(random_image(100, 90), 64), 100, 90, 64, 16,
        run_tile=lambda y, x: False))
    assert blocks and all(not block.covered.any() for block in blocks)
    assert sum(block.covered.numel() for block in blocks) == 100 * 90
