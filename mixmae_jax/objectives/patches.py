"""Images <-> patch sequences, the per-patch normalized pixel targets (norm-pix), and the loss
that compares predictions with them on the hidden patches."""
import einops
import jax
import jax.numpy as jnp
import numpy as np

NORM_PIX_EPS = 1e-6


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p) * (W/p), p * p * C], each patch in (row, col, channel) order."""
  return einops.rearrange(images, 'b (h p) (w q) c -> b (h w) (p q c)', p=patch, q=patch)


def unpatchify(patches: jax.Array, patch: int, channels: int = 3) -> jax.Array:
  """[B, h * w, p * p * C] -> [B, h * p, w * p, C] for a square grid; inverse of `patchify`."""
  side = int(round(patches.shape[1]**0.5))
  return einops.rearrange(patches, 'b (h w) (p q c) -> b (h p) (w q) c', h=side, p=patch,
                          q=patch, c=channels)


def patch_statistics(patches: jax.Array):
  """Mean and unbiased variance over each patch's values: two [..., 1] float32 arrays."""
  patches = patches.astype(jnp.float32)
  mean = patches.mean(axis=-1, keepdims=True)
  var = patches.var(axis=-1, keepdims=True, ddof=1)
  return mean, var


def normalize_patches(patches: jax.Array) -> jax.Array:
  """norm-pix targets: (x - mean) / sqrt(var + 1e-6) per patch, unbiased variance."""
  mean, var = patch_statistics(patches)
  return (patches.astype(jnp.float32) - mean) / jnp.sqrt(var + NORM_PIX_EPS)


def denormalize_patches(pred: jax.Array, reference: jax.Array) -> jax.Array:
  """Map norm-pix predictions back to pixels with the statistics of the reference patches."""
  mean, var = patch_statistics(reference)
  return pred.astype(jnp.float32) * jnp.sqrt(var + NORM_PIX_EPS) + mean


def pixel_targets(images: jax.Array, patch: int, norm_pix: bool) -> jax.Array:
  """[B, H, W, C] images -> [B, L, p * p * C] float32 reconstruction targets."""
  patches = patchify(images.astype(jnp.float32), patch)
  return normalize_patches(patches) if norm_pix else patches


def predicted_images(pred, images, patch: int, norm_pix: bool) -> np.ndarray:
  """Predicted patches [B, L, p*p*C] as images [B, H, W, C] in the normalized pixel space.

  Norm-pix predictions are mapped back with each *original* patch's mean and variance (MAE's
  convention for pictures): the colours of a picture come partly from the target.
  """
  images = np.asarray(images, np.float32)
  pred = np.asarray(pred, np.float32)
  if norm_pix:
    pred = np.asarray(denormalize_patches(pred, patchify(images, patch)))
  return np.asarray(unpatchify(pred, patch, images.shape[-1]))


def masked_reconstruction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-patch MSE averaged over the removed patches only. pred, target [B, L, P]; mask [B, L]."""
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), -1)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask) / jnp.sum(mask)
