"""mixmae_jax: MixMAE pretraining of hierarchical vision transformers in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    'jax>=0.7',
    'flax>=0.10',
    'optax>=0.2.4',
    'orbax-checkpoint>=0.11',
    'ml-collections>=0.1.1',
    'einops>=0.8',
    'numpy>=1.26',
    'pillow>=10',
    'absl-py>=2',
    # tf.data input pipeline only; the CPU build never takes accelerator memory.
    'tensorflow-cpu>=2.16; platform_system == "Linux" and platform_machine == "x86_64"',
    'tensorflow>=2.16; platform_system != "Linux" or platform_machine != "x86_64"',
    'tensorflow-datasets>=4.9',
    'tensorboard>=2.16',
]

EXTRAS_REQUIRE = {
    'test': ['pytest>=8', 'pytest-xdist>=3', 'nbclient>=0.10', 'nbformat>=5', 'ipykernel>=6',
             'scikit-learn>=1.3'],
    # The digits experiment (mixmae_jax.digits_experiment) reads scikit-learn's bundled digits.
    'digits': ['scikit-learn>=1.3'],
    # Reading and writing official PyTorch checkpoints (mixmae_jax.convert).
    'torch': ['torch>=2.1'],
    'gpu': ['jax[cuda12]>=0.7'],
    'tpu': ['jax[tpu]>=0.7'],
}

setuptools.setup(
    name='mixmae_jax',
    version='0.1.0',
    description='MixMAE (mixed and masked autoencoder) pretraining for hierarchical vision '
                'transformers in JAX/Flax, from a laptop CPU to TPU pods.',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['mixmae_jax', 'mixmae_jax.*']),
    package_data={'mixmae_jax': ['data/demo_images/*']},
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license='Apache-2.0',
)
