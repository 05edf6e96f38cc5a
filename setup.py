from setuptools import find_packages, setup

# torchaudio pins torch exactly, so the two move together.
TORCH = ["torch==2.11.*", "torchaudio==2.11.*"]
TRAIN = [
    "accelerate>=1.0",
    "datasets>=4.0",
    "evaluate>=0.4.5",
    "audiomentations>=0.40",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tensorboard>=2.15",
]
# modeling_audiomosaic.interpret (sae-train, sae-report, fewshot, heads); the core package never imports it.
INTERPRET = ["scikit-learn>=1.3", "scipy>=1.10", "matplotlib>=3.7"]

setup(
    name="modeling-audiomosaic",
    version="0.1.0",
    description="AudioMosaic audio encoder (time/frequency-masked contrastive ViT) for Hugging Face transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # `training` ships too, so that the `audiomosaic pretrain|finetune|probe` commands work from any directory.
    packages=find_packages(include=["modeling_audiomosaic", "modeling_audiomosaic.*", "training", "training.*"]),
    package_data={"modeling_audiomosaic": ["metrics/*/*.py"], "training": ["recipes/*.yaml"]},
    install_requires=[
        *TORCH,
        # The range the test suite is run against: 5.17.0 and 5.23.0 (see README, "Compatibility").
        "transformers>=5.17,<6",
        "safetensors>=0.4",
        "huggingface-hub>=1.0",
        "soundfile>=0.12",
        "numpy>=1.24",
    ],
    extras_require={
        "train": TRAIN,
        "interpret": INTERPRET,
        "dev": [*TRAIN, *INTERPRET, "pytest>=8", "hypothesis>=6.100"],
    },
    entry_points={"console_scripts": ["audiomosaic=modeling_audiomosaic.cli:main"]},
)
