from setuptools import find_packages, setup

setup(
    name='torchassistant',
    version='0.1.0',
    description='Config-driven training on top of PyTorch: write a JSON spec, not a training loop.',
    packages=find_packages(include=['torchassistant', 'torchassistant.*']),
    python_requires='>=3.9',
    # torchvision pins the torch it was built against; leaving torch unpinned lets pip take that one.
    install_requires=['torch', 'torchvision', 'torchmetrics>=1.0', 'jsonschema>=4.18'],
    extras_require={'test': ['pytest', 'hypothesis']},
)
