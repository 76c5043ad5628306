"""rs: ResNet-RS (Bello et al., 2021) in JAX/Flax. `pip install -e '.[test]'`."""
import pathlib

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
requirements = [line.split('#')[0].strip()
                for line in (here / 'requirements.txt').read_text().splitlines()]

setup(
    name='rs',
    version='0.1.0',
    description='ResNet-RS training, scaling and fine-tuning in JAX',
    long_description=(here / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    # `configs` ships too, so `from configs import base` works wherever rs.main runs.
    packages=find_packages(include=['rs', 'rs.*', 'configs']),
    install_requires=[r for r in requirements if r],
    extras_require={
        # timm (with torch and torchvision) is the independent reference for parity tests;
        # these torch builds install from local disk on the CI machines (Python 3.11).
        'test': ['pytest', 'pytest-xdist', 'torch==2.14.1', 'torchvision==0.29.1',
                 'timm==1.0.31', 'scikit-image',
                 'scikit-learn==1.9.1',  # its bundled digits: the transfer study's tiny run
                 # CI executes notebooks/finetune.ipynb top to bottom.
                 'nbclient==0.11.0', 'nbformat==5.11.1', 'ipykernel==7.4.0',
                 # tests/test_export.py: gs:// against a local GCS server (gcsfs for epath).
                 'gcsfs==2026.10.1', 'gcp-storage-emulator==2026.7.19'],
    },
)
