"""mixmae_jax: MixMAE pretraining of hierarchical vision transformers in JAX/Flax.

Installs:
- `pip install -e .`: the core, for loading checkpoints in a notebook (`mixmae_jax.load`), the
  models, objectives and the TF-free train-step benchmark; no TensorFlow (about 1.3 GB).
- `pip install -e '.[train]'`: adds what the training and evaluation commands read data and
  write events with (tf.data, TFDS, TensorBoard).
- `[torch]` converts official checkpoints, `[digits]` runs the digits experiment, `[test]` is
  everything the test suite needs, `[gpu]` / `[tpu]` the accelerator builds of JAX (`[tpu]`
  also lets a CPU-only machine compile the train step for TPU topologies: `--tpu_topology`).
Python 3.11 or newer (JAX's own floor); the training install needs TensorFlow, which has wheels
for Python 3.11-3.13 only so far.
"""
import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))

# What the package imports outside training's data input (tests/test_install.py checks that
# declared and imported distributions agree).
CORE = [
    'jax>=0.7',
    'flax>=0.10',
    'optax>=0.2.4',
    'orbax-checkpoint>=0.11',
    'etils[epath]>=1.5',
    'ml-collections>=1.0',
    'einops>=0.8',
    'numpy>=1.26',
    # SimMIM's bicubic-spline resize of relative-position tables (also a JAX dependency).
    'scipy>=1.11',
    'pillow>=10',
    'absl-py>=2',
    # JAX locks its persistent compilation cache only with this (run_control.py says why)
    'filelock>=3.12',
]

TRAIN = [
    # tf.data input pipeline only; the CPU build never takes accelerator memory.
    'tensorflow-cpu>=2.16; platform_system == "Linux" and platform_machine == "x86_64"',
    'tensorflow>=2.16; platform_system != "Linux" or platform_machine != "x86_64"',
    'tensorflow-datasets>=4.9',
    'tensorboard>=2.16',
]

WEIGHTS = ['huggingface_hub>=0.24', 'safetensors>=0.4', 'gdown>=5']

EXTRAS_REQUIRE = {
    'train': TRAIN,
    # Reading and writing official PyTorch checkpoints (mixmae_jax.convert); the CPU wheel is
    # enough, and much smaller: pip install torch --index-url https://download.pytorch.org/whl/cpu
    'torch': ['torch>=2.1'],
    # The digits experiment reads scikit-learn's bundled digits.
    'digits': ['scikit-learn>=1.3'],
    # Published weights by name (mixmae_jax.load('mae_vit_base_patch16')): the Hugging Face Hub
    # client, safetensors (read with NumPy, no PyTorch) and gdown for Google Drive releases.
    'weights': WEIGHTS,
    # what the suite and CI's lint need (PyTorch is separate: its CPU wheel has its own index)
    'test': TRAIN + WEIGHTS + ['pytest>=8', 'pytest-xdist>=3', 'nbclient>=0.10', 'nbformat>=5',
                     'ipykernel>=6', 'scikit-learn>=1.3', 'ruff>=0.6'],
    'gpu': ['jax[cuda12]>=0.7'],
    'tpu': ['jax[tpu]>=0.7'],
}


# command -> module:function; each is also `python -m` of its module.
CONSOLE_SCRIPTS = [
    'mixmae-train = mixmae_jax.train:main',
    'mixmae-finetune = mixmae_jax.finetune:main',
    'mixmae-convert = mixmae_jax.convert:main',
] + [f'mixmae-{name.replace("_", "-")} = mixmae_jax.scripts:{name}' for name in (  # its COMMANDS
    'weights', 'benchmark', 'gpu_check', 'pipeline_benchmark', 'save_stall_benchmark',
    'topk_benchmark', 'profile_summary', 'cifar_experiment', 'digits_experiment', 'tpu_sweep')]


def _version() -> str:
  with open(os.path.join(HERE, 'mixmae_jax', '__init__.py')) as f:
    return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def _readme() -> str:
  path = os.path.join(HERE, 'README.md')
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    return f.read()


if __name__ == '__main__':
  setuptools.setup(
      name='mixmae_jax',
      version=_version(),
      description='MixMAE (mixed and masked autoencoder) pretraining for hierarchical vision '
                  'transformers in JAX/Flax, from a laptop CPU to TPU pods.',
      long_description=_readme(),
      long_description_content_type='text/markdown',
      # The top-level configs/ is installed as mixmae_jax.configs, so recipes are found by name
      # (`--config=demo`) from any directory after a non-editable install.
      packages=setuptools.find_packages(include=['mixmae_jax', 'mixmae_jax.*'])
      + ['mixmae_jax.configs'],
      package_dir={'mixmae_jax.configs': 'configs'},
      package_data={'mixmae_jax': ['data/demo_images/*'], 'mixmae_jax.configs': ['*.py']},
      entry_points={'console_scripts': CONSOLE_SCRIPTS},
      python_requires='>=3.11',
      install_requires=CORE,
      extras_require=EXTRAS_REQUIRE,
      license='Apache-2.0',
  )
