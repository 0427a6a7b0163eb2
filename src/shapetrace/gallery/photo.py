"""The chapter's example photo: matplotlib's ``grace_hopper.jpg`` (512 wide, 600 high) as a tensor."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def photo_tensor(height: int | None = None, width: int | None = None) -> torch.Tensor:
    """The photo as a float ``(1, 3, H, W)`` tensor in ``[0, 1]``.

    Without a size it is the photo as stored (600 x 512). For a larger size it is first upscaled by the
    smallest whole factor that covers it (bilinear), then centre-cropped: ``photo_tensor(1000, 846)`` is the
    2x upscale (1200 x 1024) cropped to 1000 high, 846 wide.
    """
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    h0, w0 = x.shape[-2:]
    height = h0 if height is None else height
    width = w0 if width is None else width
    factor = max(1, math.ceil(height / h0), math.ceil(width / w0))
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width].contiguous()
