import re

from setuptools import find_packages, setup

with open('torchassistant/__init__.py') as f:     # one place for the version: torchassistant.version
    VERSION = re.search(r'^version = "(.+)"$', f.read(), re.M).group(1)

setup(
    name='torchassistant',
    version=VERSION,
    description='Config-driven training on top of PyTorch: write a JSON spec, not a training loop.',
    packages=find_packages(include=['torchassistant', 'torchassistant.*']),
    python_requires='>=3.9',
    # torchvision pins the torch it was built against; leaving torch unpinned lets pip take that one.
    # tqdm draws the progress bars; matplotlib `torchassistant plot`'s learning curves (Agg backend: no
    # display needed). TensorBoard is needed only by the "tensorboard" logger: the extra of that name.
    install_requires=['torch', 'torchvision', 'torchmetrics>=1.0', 'jsonschema>=4.18', 'tqdm>=4.60',
                      'matplotlib>=3.5'],
    extras_require={'tensorboard': ['tensorboard'], 'test': ['pytest', 'hypothesis', 'tensorboard']},
    entry_points={'console_scripts': ['torchassistant = torchassistant.cli:main']},
)
