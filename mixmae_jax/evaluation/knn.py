"""k-NN classification of pooled encoder features: a cheap check of a pretrained encoder.

Features are the classifier's pooled features (the encoder's `features`: Swin's averaged final
norm, ViT's cls token or global pool) of the evaluation view (resize, centre crop) of every
training and evaluation image, L2-normalized. Each evaluation image's k most cosine-similar
training images vote for their labels with weight
exp(similarity / temperature) (the weighted k-NN of DINO and the instance-discrimination
literature; k 20, temperature 0.07 by default). No training, no checkpoint: the scores are
printed and written to metrics.jsonl.

With several hosts each extracts the features of its share and all hosts gather all of them, so
host memory must hold the training set's features (1.28M x 1024 float32 = 5 GB for ImageNet and
Swin-B).
"""
import logging
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from mixmae_jax.data import pixels
from mixmae_jax.evaluation import finetune_checks
from mixmae_jax.evaluation.accuracy import topk_correct
from mixmae_jax.evaluation.finetune_loop import classifier_init_fn, open_task, pretrained_arch
from mixmae_jax.evaluation.linear_probe import features_fn
from mixmae_jax.networks.classifier import Classifier
from mixmae_jax.networks.compute_options import options_from_config
from mixmae_jax.training import parallel
from mixmae_jax.training import workdir as run_workdir
from mixmae_jax.training.metric_logging import MetricLog, WorkProgress

log = logging.getLogger(__name__)


def knn_scores(train_features: jax.Array, train_labels: jax.Array, test_features: jax.Array, *,
               k: int, temperature: float, num_classes: int,
               chunk: int = 1024) -> jax.Array:
  """Class scores [T, classes] of test features [T, F] by weighted vote of their k nearest
  (cosine) training features [N, F] with labels [N]."""
  train = train_features / jnp.linalg.norm(train_features, axis=-1, keepdims=True)
  train_labels = jnp.asarray(train_labels)
  k = min(k, train.shape[0])

  @jax.jit
  def score(test):
    test = test / jnp.linalg.norm(test, axis=-1, keepdims=True)
    sims, index = jax.lax.top_k(test @ train.T, k)  # [t, k]
    weights = jnp.exp(sims / temperature)[..., None]
    votes = jax.nn.one_hot(train_labels[index], num_classes) * weights
    return votes.sum(axis=1)

  return jnp.concatenate([score(test_features[i:i + chunk])
                          for i in range(0, test_features.shape[0], chunk)])


def extract_features(model: Classifier, params, batches, pixel_mean,
                     pixel_std) -> Tuple[np.ndarray, np.ndarray]:
  """(features [N, F], labels [N]) of every real row of `batches`, from all hosts."""
  features = features_fn(model)
  p_features = parallel.data_parallel(
      lambda p, images: features(p, pixels.normalize(images, pixel_mean, pixel_std)),
      donate_state=False)
  replicated = parallel.replicate(params)
  out, labels = [], []
  for batch in batches:
    x = np.asarray(p_features(replicated, parallel.shard(batch['image'])))
    keep = batch['mask'] > 0
    out.append(x.reshape(-1, x.shape[-1])[keep])
    labels.append(batch['label'][keep])
  out, labels = np.concatenate(out), np.concatenate(labels)
  if jax.process_count() > 1:  # every host gets every host's rows, in host order
    counts = multihost_utils.process_allgather(np.asarray([len(labels)]))
    pad = int(np.max(counts)) - len(labels)
    out = np.pad(out, ((0, pad), (0, 0)))
    labels = np.pad(labels, (0, pad))
    all_out, all_labels = multihost_utils.process_allgather((out, labels))
    out = np.concatenate([x[:int(n)] for x, n in zip(all_out, np.ravel(counts))])
    labels = np.concatenate([y[:int(n)] for y, n in zip(all_labels, np.ravel(counts))])
  return out, labels


def knn_evaluate(config, workdir: str) -> Dict[str, float]:
  """k-NN top-1/top-5 (%) of `config.pretrained`'s encoder (or a random one) on the eval split.

  Holds the workdir while it runs (`training/workdir.py`).
  """
  finetune_checks.validate(config, global_devices=jax.device_count(),
                           process_count=jax.process_count())
  with run_workdir.claim(workdir, config) as claim:
    return _knn(config, workdir, claim)


def _knn(config, workdir: str, claim) -> Dict[str, float]:
  from mixmae_jax.data import labelled  # TensorFlow only here, not at import
  dtype, train_source, eval_source, num_classes = open_task(config)
  arch, encoder = pretrained_arch(config, num_classes)
  claim.start()
  model = Classifier(arch, dtype=dtype, options=options_from_config(config.model))
  params = jax.jit(classifier_init_fn(model, 0.01))(jax.random.PRNGKey(config.seed), encoder)
  feats = {}
  for name, source in (('train', train_source), ('eval', eval_source)):
    batches = labelled.eval_batches(
        source, image_size=arch.encoder.img_size, crop_pct=config.data.eval_crop_pct,
        per_host_batch=config.eval_batch_size // jax.process_count(),
        host_index=jax.process_index(), host_count=jax.process_count(),
        max_pixels=config.data.max_image_pixels)
    batches = WorkProgress(f'k-NN features of the {name} images', source.size, 'images').over(
        batches, lambda batch: int(batch['mask'].sum()) * jax.process_count())
    feats[name] = extract_features(model, params, batches, config.data.mean, config.data.std)
  scores = knn_scores(feats['train'][0], feats['train'][1], feats['eval'][0], k=config.knn.k,
                      temperature=config.knn.temperature, num_classes=num_classes)
  labels = jnp.asarray(feats['eval'][1])
  result = {f'knn_top{n}': 100.0 * float(jnp.mean(topk_correct(scores, labels, n)))
            for n in (1, 5)}
  result['knn_count'] = int(labels.shape[0])
  if jax.process_index() == 0:
    print(f'k-NN (k={config.knn.k}, T={config.knn.temperature}) on {result["knn_count"]} images: '
          f'top-1 {result["knn_top1"]:.2f} top-5 {result["knn_top5"]:.2f}', flush=True)
  metric_log = MetricLog(workdir, enabled=jax.process_index() == 0)
  claim.require()
  metric_log.write(0, result)
  metric_log.flush()
  return result
