"""culturegan.transfer: applying trained generators to images and folders of any size.

    from culturegan.transfer import stylize
    result = stylize("photo.jpg", checkpoint="ukiyoe.safetensors")     # a PIL image
    # a multi-culture generator steered by a folder of paintings, half way from the photo's own culture
    result = stylize("photo.jpg", checkpoint="cultures.safetensors", reference="hokusai/", strength=0.5,
                     source_culture="photo")
"""

from culturegan.transfer.files import TransferReport, transfer_files
from culturegan.transfer.stylizer import Stylizer, stylize

__all__ = ["Stylizer", "TransferReport", "stylize", "transfer_files"]
