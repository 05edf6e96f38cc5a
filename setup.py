from setuptools import find_packages, setup

# Floors are the oldest versions CI tests (.ci/run's second environment); no upper bound below the next major.
CORE = [
    "torch>=2.6",
    "transformers>=5.23,<6",  # 5.23: pipeline("audio-classification") gives multi-label heads sigmoid scores
    "safetensors>=0.4",
    "huggingface-hub>=1.0",
    "soundfile>=0.12",
    "numpy>=1.24",
]
TRAIN = [
    "accelerate>=1.0",
    "datasets>=4.0",
    "evaluate>=0.4.5",
    "audiomentations>=0.40",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tensorboard>=2.15",
    "pyyaml>=6.0",
]
# torchaudio is never needed: it is only the independent reference the tests compare the feature extractor with
# (and what transformers' audio-classification pipeline resamples dict inputs with; see docs/compatibility.md).
TORCHAUDIO = ["torchaudio>=2.6"]
# `audiomosaic export-onnx`: torch's dynamo exporter needs onnxscript; onnxruntime checks the export and quantises it.
# Floors are the versions the ONNX tests ran with.
ONNX = ["onnx>=1.23", "onnxruntime>=1.32", "onnxscript>=0.7"]
# The audio-language model's LoRA (training/ltu.py, convert-ltu); the floor is the version its tests ran with.
LTU = ["peft>=0.21"]
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
    # The repository's `training/` folder is installed as `audiomosaic_training` (like open_clip's `open_clip_train`),
    # so that it cannot shadow or be shadowed by another top-level `training` package.
    packages=find_packages(include=["modeling_audiomosaic", "modeling_audiomosaic.*"])
    + ["audiomosaic_training", "audiomosaic_training.metrics"],
    package_dir={"audiomosaic_training": "training"},
    package_data={
        "modeling_audiomosaic": ["model_card.md", "labels/*.csv", "labels/README.md"],
        "audiomosaic_training": ["recipes/*.yaml", "metrics/*/*.py"],
    },
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "torchaudio": TORCHAUDIO,
        "onnx": ONNX,
        "ltu": LTU,
        "interpret": INTERPRET,
        # parameterized: transformers' common model tests (tests/test_transformers_common.py) are written with it.
        "dev": [*TRAIN, *TORCHAUDIO, *ONNX, *LTU, *INTERPRET, "pytest>=8", "hypothesis>=6.100", "parameterized>=0.9"],
    },
    entry_points={"console_scripts": ["audiomosaic=modeling_audiomosaic.cli:main"]},
)
