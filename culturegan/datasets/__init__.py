"""culturegan.datasets: a procedural culture dataset for the demo and the tests (a stand-in for
real culture collections; see synthetic.py)."""

from culturegan.datasets.synthetic import CONTENT, CULTURES, culture_image, write_dataset

__all__ = ["CONTENT", "CULTURES", "culture_image", "write_dataset"]
