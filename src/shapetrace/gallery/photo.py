"""The chapter's example photo: matplotlib's ``grace_hopper.jpg`` (512 wide, 600 high) as a tensor, and the
pictures the gallery shows of it (``Picture``: the photo and what an upsampling layer made of it, as PNG)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

PHOTO = "grace_hopper.jpg"
# zlib's fastest level: the gallery's eight PNGs come out 16 % larger than at the default level 6 (3.2 MB
# against 2.7 MB, the same pixels) and are written 4 times faster (a quarter of a second against a second)
PNG_COMPRESS_LEVEL = 1


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for a while: a bilinear resize or a convolution split over more threads rounds a few
    pixels differently, so the pictures would depend on the number of gallery workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def photo_path() -> Path:
    """Where matplotlib's sample photo is, found without importing matplotlib (a fifth of a second)."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "mpl-data" / "sample_data" / PHOTO
        if path.is_file():
            return path
    from matplotlib import cbook  # noqa: PLC0415 - only for a matplotlib laid out some other way: ask it

    return Path(cbook.get_sample_data(PHOTO, asfileobj=False))


def photo_tensor(height: int | None = None, width: int | None = None) -> torch.Tensor:
    """The photo as a float ``(1, 3, H, W)`` tensor in ``[0, 1]``.

    Without a size it is the photo as stored (600 x 512). For a larger size it is first upscaled by the
    smallest whole factor that covers it (bilinear), then centre-cropped: ``photo_tensor(1000, 846)`` is the
    2x upscale (1200 x 1024) cropped to 1000 high, 846 wide.
    """
    with Image.open(photo_path()) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    h0, w0 = x.shape[-2:]
    height = h0 if height is None else height
    width = w0 if width is None else width
    factor = max(1, math.ceil(height / h0), math.ceil(width / w0))
    if factor > 1:
        with _one_thread():
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width].contiguous()


# ---- pictures for the gallery pages: the photo and what a layer made of it -------------------------------
@dataclass(frozen=True)
class Picture:
    """One image of an exhibit page: PNG bytes, shown ``width`` x ``height`` CSS pixels (its real size unless it
    is a zoom, which is already enlarged with nearest-neighbour so each pixel is a visible square)."""

    file: str
    png: bytes
    caption: str
    width: int
    height: int
    zoom: bool = False


def _png(x: torch.Tensor, scale: int = 1) -> bytes:
    """A ``(3, H, W)`` tensor in ``[0, 1]`` as PNG bytes (the same bytes for the same tensor), enlarged
    ``scale`` times with nearest-neighbour."""
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr, "RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


THUMB_BOX = (540, 340)  # the index's cards show a picture at most about 270×170 CSS pixels: twice that


def thumbnail(png: bytes, box: tuple[int, int] = THUMB_BOX) -> tuple[bytes, int, int]:
    """A small copy of a picture for the index (JPEG bytes, width, height): scaled down to fit ``box``, its
    aspect ratio kept, a few percent of the full PNG's bytes (the same bytes for the same picture)."""
    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB")
        small.thumbnail(box, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=82, optimize=True)
    return buf.getvalue(), small.width, small.height


def size_text(height: int, width: int) -> str:
    """A picture's size as the pages write it: height first, as in torch's (N, C, H, W), and named as such."""
    return f"{height}×{width} pixels (height × width)"


def _picture(file: str, x: torch.Tensor, caption: str, scale: int = 1) -> Picture:
    return Picture(file, _png(x, scale), caption, x.shape[-1] * scale, x.shape[-2] * scale, zoom=scale > 1)


# The left lens of the glasses: small enough that its pixels show when enlarged.
_EYE = (182, 214, 24)  # top, left, side (in the stored 600 x 512 photo)


def upsample_pictures(name: str) -> list[Picture]:
    """The photo, ``nn.Upsample(scale_factor=2, mode="nearest")`` of it, and the same small patch of both
    enlarged so that the 2x2 blocks of repeated pixels show."""
    x = photo_tensor()
    y = F.interpolate(x, scale_factor=2, mode="nearest")
    top, left, side = _EYE
    patch_in = x[0, :, top:top + side, left:left + side]
    patch_out = y[0, :, 2 * top:2 * (top + side), 2 * left:2 * (left + side)]
    h, w = x.shape[-2:]
    return [
        _gridded(_picture(f"{name}.zoom-input.png", patch_in, f"A {side}×{side} patch of the input (the left "
                          "lens), each pixel enlarged 12 times, a grid line around every pixel.", scale=12), 12),
        _gridded(_picture(f"{name}.zoom-output.png", patch_out, f"The same patch of the output: {2 * side}×"
                          f"{2 * side} pixels, enlarged 6 times, a grid line around every pixel. Every input pixel "
                          "became a 2×2 block of four equal pixels.", scale=6), 6),
        _picture(f"{name}.input.png", x[0], f"The input: {size_text(h, w)}, the tensor (1, 3, {h}, {w}), shown at "
                 "its real size."),
        _picture(f"{name}.output.png", y[0], f"The output: {size_text(2 * h, 2 * w)}, the tensor "
                 f"(1, 3, {2 * h}, {2 * w}), shown at its real size: the same picture, twice as high and twice as "
                 "wide, no sharper."),
    ]


def _gridded(pic: Picture, cell: int) -> Picture:
    """``pic`` with a thin light line around every ``cell`` x ``cell`` square (one pixel of the original)."""
    with Image.open(io.BytesIO(pic.png)) as im:
        im = im.convert("RGB")
        draw = ImageDraw.Draw(im)
        for x in range(0, im.width, cell):
            draw.line([(x, 0), (x, im.height)], fill=(235, 235, 235), width=1)
        for y in range(0, im.height, cell):
            draw.line([(0, y), (im.width, y)], fill=(235, 235, 235), width=1)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return Picture(pic.file, buf.getvalue(), pic.caption, pic.width, pic.height, zoom=True)


def transposed_pictures(name: str, build: Callable[[], torch.nn.Module]) -> list[Picture]:
    """The 1000 x 846 crop, the first three of the six output channels of the model ``build()`` makes (a
    transposed ``ConvLayer(3, 6)``, initialised from seed 0 so the pictures are the same bytes every build)
    as colours, and the top-left corners of both enlarged with the input's edge marked."""
    x = photo_tensor(1000, 846)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build()
    with torch.no_grad(), _one_thread():
        y = model.eval()(x)
    rgb = y[0, :3]
    rgb = rgb / rgb.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)  # each channel to [0, 1] after the ReLU
    corner = 12
    zin = torch.ones(3, corner + 2, corner + 2)  # the input's corner inside a white 1-pixel margin
    zin[:, 1:, 1:] = x[0, :, :corner + 1, :corner + 1]
    zout = rgb[:, :corner + 2, :corner + 2].clone()
    h, w = x.shape[-2:]
    oh, ow = y.shape[-2:]
    zoom = 20
    pics = [_marked_corner(f"{name}.zoom-input.png", zin, zoom,
                               f"The input's top-left {corner}×{corner} pixels, enlarged {zoom} times, in the "
                               "place they cover in the output (the white ring is outside the input).")]
    pics.append(_marked_corner(f"{name}.zoom-output.png", zout, zoom,
                               f"The output's top-left {corner + 2}×{corner + 2} pixels: the outer ring is new. A "
                               "3×3 kernel with stride 1 and no padding spreads every input pixel over a 3×3 "
                               f"block, so each side grows by 2: {h}+2 = {oh} rows, {w}+2 = {ow} columns."))
    pics.append(_picture(f"{name}.input.png", x[0], f"The input: {size_text(h, w)}, the tensor (1, 3, {h}, {w}), "
                         "real size."))
    pics.append(_picture(f"{name}.output.png", rgb, f"The output: {size_text(oh, ow)}, the tensor (1, 6, {oh}, {ow}), "
                         "real size; "
                         "channels 0-2 of 6 shown as red, green and blue (random weights, so the colours mean "
                         "nothing): one pixel more on every side."))
    return pics


def _marked_corner(file: str, img: torch.Tensor, zoom: int, caption: str) -> Picture:
    """``img`` enlarged ``zoom`` times with a red line where the input's top and left edges fall (one pixel in)."""
    pic = _picture(file, img, caption, scale=zoom)
    with Image.open(io.BytesIO(pic.png)) as im:
        im = im.convert("RGB")
        draw = ImageDraw.Draw(im)
        draw.line([(zoom, im.height), (zoom, zoom), (im.width, zoom)], fill=(220, 30, 30), width=3)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return Picture(file, buf.getvalue(), caption, pic.width, pic.height, zoom=True)
