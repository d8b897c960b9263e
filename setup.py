import re

from setuptools import find_packages, setup

with open('torchassistant/__init__.py') as f:     # one place for the version: torchassistant.version
    VERSION = re.search(r'^version = "(.+)"$', f.read(), re.M).group(1)

EXPORT = ['safetensors>=0.4', 'onnx>=1.15', 'onnxscript>=0.1', 'onnxruntime>=1.17']
SERVE = ['fastapi>=0.100', 'uvicorn>=0.29', 'python-multipart>=0.0.9', 'httptools>=0.6',
         'uvloop>=0.19; sys_platform != "win32"']
MLFLOW = ['mlflow-skinny>=2.10']
POSTGRES = ['psycopg[binary]>=3.1']

setup(
    name='torchassistant',
    version=VERSION,
    description='Config-driven training on top of PyTorch: write a JSON spec, not a training loop.',
    packages=find_packages(include=['torchassistant', 'torchassistant.*']),
    python_requires='>=3.9',
    # torchvision pins the torch it was built against; leaving torch unpinned lets pip take that one.
    # tqdm draws the progress bars; matplotlib `torchassistant plot`'s learning curves (Agg backend: no
    # display needed). TensorBoard is needed only by the "tensorboard" logger: the extra of that name.
    # PyYAML reads .yaml specs; Optuna runs `torchassistant sweep` (its study, samplers, pruners and
    # SQLAlchemy storage; both imported only when used).
    install_requires=['torch', 'torchvision', 'torchmetrics>=1.0', 'jsonschema>=4.18', 'tqdm>=4.60',
                      'matplotlib>=3.5', 'pyyaml>=5.4', 'optuna>=3.4'],
    # `torchassistant export` (safetensors; ONNX through torch.onnx's dynamo exporter, which needs onnx and
    # onnxscript, checked with onnxruntime) and `torchassistant serve` (FastAPI on uvicorn; python-multipart
    # reads uploads; uvicorn takes httptools' HTTP parser and uvloop's event loop when they are there) are
    # extras: training and infer need none of them.
    extras_require={'tensorboard': ['tensorboard'],
                    'export': EXPORT,
                    'serve': SERVE,
                    'mlflow': MLFLOW,           # the "mlflow" logger
                    'postgres': POSTGRES,       # sweeps that share a PostgreSQL study
                    'test': ['pytest', 'pytest-xdist', 'hypothesis', 'tensorboard', 'schemathesis>=4.0', 'ruff', 'mypy',
                             'types-PyYAML']
                    + EXPORT + SERVE + MLFLOW + POSTGRES},
    entry_points={'console_scripts': ['torchassistant = torchassistant.cli:main']},
)
