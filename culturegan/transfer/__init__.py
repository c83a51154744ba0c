"""culturegan.transfer: applying trained generators to images and folders of any size.

    from culturegan.transfer import stylize
    result = stylize("photo.jpg", checkpoint="ukiyoe.safetensors")     # a PIL image
"""

from culturegan.transfer.files import TransferReport, transfer_files
from culturegan.transfer.stylizer import Stylizer, stylize

__all__ = ["Stylizer", "TransferReport", "stylize", "transfer_files"]
