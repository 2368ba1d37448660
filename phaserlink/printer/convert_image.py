"""Pictures to one PDF, one page per picture (per frame of a TIFF).

Run as its own process, ``python3 -m phaserlink.printer.convert_image
--media a4 OUT.pdf IN...``, in the converters' sandbox (docs/convert.md):
a hostile picture (a decompression bomb, a decoder bug) can take this
process down, never the appliance.

img2pdf embeds JPEG (and JPEG 2000) as they are, without decoding them
again (no loss), PNG, GIF and TIFF losslessly; what it cannot read (HEIC,
WebP, an animated GIF) Pillow decodes first and it is embedded as PNG.
Each page is the media (``--media``: a short name such as a4 or letter,
or a PWG name such as na_letter_8.5x11in, as the printer says) with margins; the picture is turned
upright by its EXIF orientation (``auto_orient``) and shrunk to fit, never
enlarged past its own resolution (``FitMode.shrink``) and never cropped.

Exit 0: OUT is written.  Exit 65 (EX_DATAERR): a picture cannot be read;
the message on stderr says which and why (the document's fault).  Any
other exit is the machine's (a module missing, memory).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from phaserlink.message.job_options import media_size  # the media vocabulary, named once

#: White margin around each picture, in points (about 10 mm): inside what
#: most printers can print.
MARGIN = 28.35
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_PIXELS,
)

#: The exit status for a picture that cannot be read (sysexits EX_DATAERR).
EX_DATAERR = 65


def _embeddable(path: Path) -> bytes | str:
    """What img2pdf is given for *path*: the file itself when img2pdf reads
    its format, else Pillow's decoding of it as PNG (every frame)."""
    from PIL import Image

    with Image.open(path) as im:
        fmt = (im.format or "").upper()
        if fmt in ("JPEG", "PNG", "TIFF", "JPEG2000") or (fmt == "GIF" and getattr(im, "n_frames", 1) == 1):
            return str(path)
        # HEIC, WebP, animated GIF (its first frame): decoded, kept lossless.
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(im)
        if upright.mode not in ("RGB", "L", "1"):
            upright = upright.convert("RGB")
        out = io.BytesIO()
        upright.save(out, "PNG")
        return out.getvalue()


def convert(sources: list[Path], out: Path, media: str = "a4") -> None:
    import img2pdf
    from PIL import Image

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # HEIC pictures then fail as unreadable, the rest print
        pass
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    width, height = media_size(media)
    layout = img2pdf.get_layout_fun(
        pagesize=(width, height), border=(MARGIN, MARGIN), fit=img2pdf.FitMode.shrink, auto_orient=True)
    images = []
    for path in sources:
        try:
            images.append(_embeddable(path))
        except Exception as e:  # Pillow raises many kinds for a bad file
            raise ValueError(f"picture {path.name} cannot be read: {e}") from None
    try:
        document = img2pdf.convert_to_docobject(images, layout_fun=layout, rotation=img2pdf.Rotation.ifvalid)
    except Exception as e:
        raise ValueError(f"the pictures cannot be made into a PDF: {e}") from None
    # Written as it is made, not as one more copy of every picture in memory
    # (20 phone photos: 200 MB peak with img2pdf.convert's bytes, half that so).
    with open(out, "wb") as f:
        document.tostream(f)


def _media(text: str) -> str:
    try:
        media_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_image", description=__doc__.split("\n")[0])
    parser.add_argument("--media", default="a4", type=_media, help="a4, letter, ... or a PWG media name")
    parser.add_argument("out", type=Path)
    parser.add_argument("sources", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        convert(args.sources, args.out, args.media)
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return EX_DATAERR
    return 0


if __name__ == "__main__":
    sys.exit(main())
