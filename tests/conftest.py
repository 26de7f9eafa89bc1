"""Set before any test imports Triton."""
import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter (NumPy), so their code is tested on the CPU too.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
