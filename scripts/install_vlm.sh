#!/usr/bin/env bash
# Install what the `vlm` package needs into the active Python environment WITHOUT replacing torch.
#
# Why not `pip install open-flamingo`: open-flamingo 2.0.1 pins torch==2.0.1 and sentencepiece==0.1.98;
# a plain install would downgrade torch. Its model code runs on current torch/transformers (vlm.compat
# fixes the one break), so it is installed with --no-deps, together with its real runtime needs:
#   einops, einops-exts            - Flamingo's perceiver / cross-attention
#   open_clip_torch (+ ftfy, wcwidth, regex) - open_clip vision encoders (the real OpenFlamingo-9B route)
#   pycocoevalcap                  - CIDEr-D (pure Python; its Java jars are for other metrics and unused;
#                                    its pycocotools dependency is not needed for CIDEr and is skipped)
# torchvision (needed by open_clip at import time) must match the installed torch exactly
# (torch 2.N <-> torchvision 0.(N+15)); it is installed only if pip can do so without touching torch, and
# removed again if it does not import (PyPI's torchvision links the CUDA torch libraries, so it fails
# beside a CPU-only local torch build; a broken torchvision would also break transformers' image
# processors). Without it, vlm loads Flamingo's model code without open_clip and uses transformers'
# CLIP vision model (`--vision-encoder hf-clip:DIR`).
set -euo pipefail
PY=${PYTHON:-python}
PIP="$PY -m pip"
torch_before=$($PY -c 'import torch; print(torch.__version__)')
echo "torch: $torch_before (will not be changed)"

PKGS=(open-flamingo==2.0.1 einops einops-exts open_clip_torch ftfy wcwidth regex pycocoevalcap)
$PIP install --quiet --no-deps "${PKGS[@]}"

tv=$($PY - <<'PY'
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
print(f"0.{minor + 15}.*" if major == 2 else "")
PY
)
if [ -n "$tv" ] && ! $PY -c 'import torchvision' 2>/dev/null; then
  # Dry run first: accept torchvision only if it would not install or change torch.
  if $PIP install --dry-run --no-deps "torchvision==$tv" 2>/dev/null | grep -q "Would install torchvision"; then
    $PIP install --quiet --no-deps "torchvision==$tv" || true
    if ! $PY -c 'import torchvision' 2>/dev/null; then
      echo "torchvision==$tv does not import beside torch $torch_before (CPU-only build?); removing it."
      $PIP uninstall --quiet -y torchvision
    fi
  fi
fi

torch_after=$($PY -c 'import torch; print(torch.__version__)')
if [ "$torch_before" != "$torch_after" ]; then
  echo "ERROR: torch changed from $torch_before to $torch_after" >&2
  exit 1
fi
$PY - <<'PY'
from vlm.compat import open_clip_available, open_flamingo_modules
from pycocoevalcap.cider.cider import Cider  # noqa: F401
route = open_flamingo_modules().route
print(f"open_flamingo: ok (import route: {route}); open_clip: {'ok' if open_clip_available() else 'unavailable (use --vision-encoder hf-clip:DIR)'}; CIDEr: ok")
PY
