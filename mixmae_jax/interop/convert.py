"""Official PyTorch checkpoints to ours, and ours to official state dicts.

  mixmae-convert SRC.pth DST_DIR --arch mixmim_base           # official -> ours
  mixmae-convert SRC.pth DST_DIR --arch mae_vit_base_patch16
  mixmae-convert SRC.pth DST_DIR --arch ummae_swin_tiny [--decoder_pos_order=correct]
  mixmae-convert SRC.pth DST_DIR --arch simmim_swin_base
  mixmae-convert SRC_DIR DST.pth [--arch NAME]                # ours -> official

`python -m mixmae_jax.convert` is the same command. Official files may be a pretraining
checkpoint (with the decoder), an encoder alone or a fine-tuned classifier, told apart by their
keys, bare or inside a training checkpoint's `model` entry. What `--arch` does not fix is read
off the tensors by the family module (`mixmim.py`, `mae.py`, `ummae.py`, `simmim.py`). Files are
read with `torch.load(weights_only=True)`, which never runs pickled code. The result is a
checkpoint `mixmae_jax.load(DST_DIR)` opens; exported state dicts load into the official classes
with `strict=True`.
"""
import logging
import os
import sys
import time
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from absl import flags

from mixmae_jax import architectures, interop
from mixmae_jax.cli import command, extras
from mixmae_jax.interop import ConversionError, pytorch_names
from mixmae_jax.training.checkpointing import (CHECKPOINT_DIR, CheckpointError, Checkpointer,
                                               checkpoint_dir)

log = logging.getLogger(__name__)


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError(f'reading and writing .pth files needs PyTorch: '
                          f'{extras.TORCH_CPU_INSTALL}') from e
  return torch


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """A `.safetensors` state dict (as the Hugging Face Hub publishes weights), read with NumPy
  alone: no PyTorch needed."""
  try:
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError("reading .safetensors files needs safetensors: pip install "
                          "'mixmae_jax[weights]'") from e
  try:
    tensors = load_file(path)
  except Exception as e:  # truncated or foreign files
    raise ConversionError(f'{path} could not be read as safetensors ({type(e).__name__}: {e}). '
                          f'Is it complete?') from e
  return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
          for k, v in tensors.items()}


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """An official checkpoint's state dict as numpy arrays (floats as float32): a PyTorch file,
  or a `.safetensors` file (read without PyTorch)."""
  if path.endswith('.safetensors'):
    return read_safetensors(path)
  torch = _torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # truncated zips, pickles with code, non-torch files
    raise ConversionError(f'{path} could not be read as a PyTorch checkpoint ({type(e).__name__}:'
                          f' {e}). Is it complete, and an official .pth file?') from e
  if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
    obj = obj['model']
  if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
    raise ConversionError(f'{path} holds no state dict (a mapping of names to tensors).')
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in obj.items()}


def write_state_dict(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
  """Save as the official codes do: {'model': state dict}."""
  torch = _torch()
  torch.save({'model': {k: torch.tensor(np.asarray(v)) for k, v in state_dict.items()}}, path)


def family_of(arch_name: str):
  """The family module of an official model name."""
  archs = interop.official_archs()
  if arch_name not in archs:
    raise ConversionError(f'--arch {arch_name!r}: choose one of {sorted(archs)}.')
  return interop.family_module(archs[arch_name])


def infer_arch(state_dict: Mapping[str, np.ndarray], arch_name: str, **options):
  """The architecture an official state dict was made with (options: decoder_num_heads, ...)."""
  return family_of(arch_name).infer_arch(state_dict, arch_name, options)


def check_keys(state_dict: Mapping[str, np.ndarray], arch) -> None:
  """Raise listing missing, unexpected and mis-shaped keys against the architecture."""
  abstract = architectures.abstract_params(architectures.build_model(arch))
  expected = pytorch_names.expected_shapes(abstract, arch)
  missing = sorted(set(expected) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(expected))
  misshaped = sorted(f'{k}: {tuple(state_dict[k].shape)} (expected {expected[k]})'
                     for k in set(expected) & set(state_dict)
                     if tuple(state_dict[k].shape) != expected[k])
  problems = [(name, keys) for name, keys in (('missing', missing), ('unexpected', unexpected),
                                              ('mis-shaped', misshaped)) if keys]
  if problems:
    lines = [f'{name} ({len(keys)}): ' + ', '.join(keys[:12]) + (' ...' if len(keys) > 12 else '')
             for name, keys in problems]
    raise ConversionError('the checkpoint does not match the architecture:\n  ' +
                          '\n  '.join(lines))


def check_destination(dst: str, overwrite: bool) -> None:
  """Refuse a `dst` that holds anything unless `overwrite`.

  A converted checkpoint is step 0 of its own directory: written into a training workdir it
  would hide that run's steps (or, with rotation, remove them).
  """
  if os.path.isfile(dst):
    raise ConversionError(f'{dst} is a file; give a directory (new or empty) for the checkpoint.')
  held = sorted(os.listdir(dst)) if os.path.isdir(dst) else []
  if held and not overwrite:
    raise ConversionError(
        f'{dst} is not empty (it holds {", ".join(held[:5])}{" ..." if len(held) > 5 else ""}). '
        f'Give a new directory, or pass --overwrite to replace its checkpoints (they are moved '
        f'to checkpoints.replaced-<time>, not deleted).')


def move_old_checkpoints(dst: str) -> None:
  """With --overwrite: rename `dst/checkpoints` to `checkpoints.replaced-<time>`, never delete."""
  old = os.path.join(dst, CHECKPOINT_DIR)
  if os.path.exists(old):
    aside = f'{old}.replaced-{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}'
    os.rename(old, aside)
    log.warning('moved the existing %s to %s', old, aside)


def to_ours(src: str, dst: str, arch_name: str, overwrite: bool = False, **options):
  """Convert an official .pth to a checkpoint in `dst` (new or empty unless `overwrite`);
  returns the architecture."""
  check_destination(dst, overwrite)
  log.info('reading %s (%.1f MB)', src, os.path.getsize(src) / 1e6)
  state_dict = read_state_dict(src)
  arch = infer_arch(state_dict, arch_name, **options)
  log.info('%d tensors: %s', len(state_dict), describe(arch))
  state_dict = interop.our_names(family_of(arch_name), state_dict, arch)
  check_keys(state_dict, arch)
  try:
    params = pytorch_names.params_from_state_dict(state_dict, arch)
  except ValueError as e:
    raise ConversionError(str(e)) from e
  move_old_checkpoints(dst)
  log.info('writing %s', checkpoint_dir(dst))
  ckpt = Checkpointer(checkpoint_dir(dst), keep=None)  # rotation would delete others' steps
  ckpt.save(0, params, None, {'arch': architectures.to_dict(arch), 'step': 0,
                              'converted_from': os.path.abspath(src), 'official_arch': arch_name})
  ckpt.wait()
  ckpt.close()
  return arch


def check_export_destination(dst: str, overwrite: bool) -> None:
  """Refuse a directory, a missing parent, and an existing file unless `overwrite`: swapped
  arguments (`convert WORKDIR official.pth`) must not destroy an official weights file."""
  if os.path.isdir(dst) or dst.endswith(('/', os.sep)):
    raise ConversionError(f'{dst} is a directory; exporting writes one file: give a path such '
                          f'as {os.path.join(dst.rstrip("/"), "model.pth")}.')
  if os.path.dirname(dst) and not os.path.isdir(os.path.dirname(dst)):
    raise ConversionError(f'{os.path.dirname(dst)} does not exist; create it first.')
  if os.path.lexists(dst) and not overwrite:
    raise ConversionError(
        f'{dst} already exists ({os.path.getsize(dst) if os.path.isfile(dst) else 0} bytes); '
        f'exporting would replace it. Give a new path, or pass --overwrite (the old file is '
        f'kept as {os.path.basename(dst)}.replaced-<time>, not deleted). Converting an official '
        f'file to ours is `convert SRC.pth DST_DIR --arch NAME`.')


def write_file_safely(dst: str, write) -> None:
  """`write(path)` into a temporary file beside `dst`, then rename it over `dst`, so `dst` is
  never half written; an existing `dst` is first moved to `dst.replaced-<time>`."""
  temporary = f'{dst}.partial-{os.getpid()}'
  try:
    write(temporary)
    if os.path.lexists(dst):
      aside = f'{dst}.replaced-{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}'
      os.rename(dst, aside)
      log.warning('moved the existing %s to %s', dst, aside)
    os.replace(temporary, dst)
  finally:
    if os.path.exists(temporary):
      os.unlink(temporary)


def to_pytorch(src: str, dst: str, arch_name: Optional[str] = None, overwrite: bool = False):
  """Export a checkpoint of ours (a workdir, checkpoints dir or step dir) to an official .pth;
  an existing `dst` only with `overwrite` (kept aside, never deleted)."""
  from mixmae_jax.interop.loading import load  # pylint: disable=import-outside-toplevel
  check_export_destination(dst, overwrite)
  log.info('loading %s', src)
  model, params = load(src)
  arch = model.config
  families = [family_of(arch_name)] if arch_name else \
      [interop.family_module(f) for f in interop.FAMILIES]
  problems = [family.export_problem(arch, arch_name) for family in families]
  if all(problems):
    raise ConversionError('cannot export: ' + ' '.join(p for p in problems if p))
  family = families[problems.index(None)]
  log.info('writing %s', dst)
  state_dict = interop.official_names(family, pytorch_names.state_dict_from_params(params, arch),
                                      arch)
  write_file_safely(dst, lambda path: write_state_dict(path, state_dict))
  return arch


def describe(arch) -> str:
  kind = architectures.kind(arch)
  encoder = arch if kind == 'encoder' else arch.encoder
  name = arch.objective if kind == 'pretraining' else kind
  return f'{name} {encoder.name} {encoder.img_size}px'


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum('arch', None, sorted(interop.official_archs()),
                    'official model name; required when SRC is a .pth file', flag_values=fv)
  flags.DEFINE_integer('decoder_num_heads', 16, 'decoder heads of a pretraining checkpoint (not '
                       'stored in it)', flag_values=fv)
  flags.DEFINE_bool('norm_pix_loss', True, 'whether an MAE or UM-MAE pretraining checkpoint was '
                    'trained on norm-pix targets (not stored in it; the released ones were)',
                    flag_values=fv)
  flags.DEFINE_integer('img_size', 256, 'input size of a UM-MAE Swin checkpoint (not stored in '
                       'it)', flag_values=fv)
  flags.DEFINE_enum('decoder_pos_order', 'official', ['official', 'correct'],
                    'decoder position order of a UM-MAE pretraining checkpoint: the released '
                    'code\'s (which its weights were trained with) or the corrected one',
                    flag_values=fv)
  flags.DEFINE_bool('overwrite', False, 'convert into a DST_DIR that is not empty (its '
                    'checkpoints are moved to checkpoints.replaced-<time>), or export over an '
                    'existing DST.pth (moved to DST.pth.replaced-<time>); nothing is deleted',
                    flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`SRC DST [--arch NAME ...]` (argv without the program name; None: sys.argv[1:])."""
  fv = flags.FlagValues()
  define_flags(fv)
  args, positional = command.parse(__doc__, fv, argv, 'convert')
  if len(positional) != 2:
    command.fail(f'expected SRC and DST, got {positional or "nothing"} (see --help)')
  src, dst = positional
  logging.basicConfig(level=logging.WARNING, format='%(message)s')
  logging.getLogger('mixmae_jax').setLevel(logging.INFO)  # our progress; Orbax's only if wrong
  try:
    if os.path.isfile(src):
      if not args.arch:
        raise ConversionError('--arch is required to convert a .pth file (see --help)')
      arch = to_ours(src, dst, args.arch, overwrite=args.overwrite,
                     decoder_num_heads=args.decoder_num_heads, norm_pix_loss=args.norm_pix_loss,
                     img_size=args.img_size, decoder_pos_order=args.decoder_pos_order)
    elif os.path.isdir(src):
      arch = to_pytorch(src, dst, args.arch, overwrite=args.overwrite)
    else:
      raise ConversionError(f'{src} does not exist.')
  except (ConversionError, CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {dst}: {describe(arch)}')
  return 0
