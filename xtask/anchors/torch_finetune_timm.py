"""Protocol F1's PyTorch side for a timm network: the shared anchor's loop, unchanged.

Runs `shared/anchors/torch_finetune.py` (the tutorial's loop: train epoch, val pass, JSON out)
with timm's network NAME where that script builds torchvision's MobileNetV2, so every network
is timed by the same loop. timm's `efficientnet_lite0` is the architecture of flint's
EfficientNet-Lite0 (4.65M parameters, ReLU6, batch norm kept as in training). The anchor swaps
`classifier[1]` for a new head, so the network's classifier is given torchvision's
(Dropout, Linear) shape first.

Usage: python torch_finetune_timm.py NAME ANCHOR DATA_DIR [the anchor's options]
Needs: pip install torch torchvision timm
"""
import runpy
import sys

import timm
import torch
import torchvision


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    name, anchor = sys.argv[1], sys.argv[2]

    def build(weights=None):
        # Random weights, as the anchor's MobileNetV2: the speed does not depend on them.
        model = timm.create_model(name, pretrained=False)
        model.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), model.classifier)
        return model

    torchvision.models.mobilenet_v2 = build
    sys.argv = [anchor] + sys.argv[3:]
    runpy.run_path(anchor, run_name="__main__")


if __name__ == "__main__":
    main()
