"""Training: datasets, offline pretrained backbones, three-phase fine-tuning, ONNX export (docs/ARCHITECTURE.md §11).

Nothing here touches the network unless a config explicitly allows downloads; the two
environment defaults below make Hugging Face and albumentations stay offline and quiet.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
