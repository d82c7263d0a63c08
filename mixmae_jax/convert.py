"""Convert official PyTorch checkpoints (MixMIM, MAE, UM-MAE, SimMIM) to ours and back.

  mixmae-convert SRC.pth DST_DIR --arch mixmim_base   # official -> ours
  mixmae-convert SRC_DIR DST.pth                      # ours -> official

See `mixmae_jax.interop.convert` (or `mixmae-convert --help`).
"""
import sys

from mixmae_jax.cli import startup


def main() -> None:
  startup.quiet()
  from mixmae_jax.interop.convert import main as convert  # pylint: disable=import-outside-toplevel
  sys.exit(convert())


if __name__ == '__main__':
  main()
