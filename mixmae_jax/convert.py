"""Convert official PyTorch checkpoints (MixMIM, MAE) to ours and back; see `interop/convert.py`.

  python -m mixmae_jax.convert SRC.pth DST_DIR --arch mixmim_base   # official -> ours
  python -m mixmae_jax.convert SRC_DIR DST.pth                      # ours -> official
"""
import sys

from mixmae_jax.interop.convert import main

if __name__ == '__main__':
  sys.exit(main())
