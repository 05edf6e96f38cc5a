"""AudioMosaic for Hugging Face transformers.

Importing the package registers the classes with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForAudioClassification`, `AutoModelForPreTraining`, `AutoFeatureExtractor`) and for `auto_map`, so that
`save_pretrained` folders also load with `trust_remote_code=True` where this package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
)

from .configuration_audiomosaic import AudioMosaicConfig
from .feature_extraction_audiomosaic import (
    AudioMosaicFeatureExtractor,
    average_windows,
    decode_audio,
    load_audio,
    resample,
)
from .modeling_audiomosaic import (
    AudioMosaicForAudioClassification,
    AudioMosaicForPreTraining,
    AudioMosaicModel,
    AudioMosaicPreTrainedModel,
    contrastive_loss,
    resize_position_embeddings,
)


AutoConfig.register(AudioMosaicConfig.model_type, AudioMosaicConfig, exist_ok=True)
AutoModel.register(AudioMosaicConfig, AudioMosaicModel, exist_ok=True)
AutoModelForAudioClassification.register(AudioMosaicConfig, AudioMosaicForAudioClassification, exist_ok=True)
AutoModelForPreTraining.register(AudioMosaicConfig, AudioMosaicForPreTraining, exist_ok=True)
AutoFeatureExtractor.register(AudioMosaicConfig, AudioMosaicFeatureExtractor, exist_ok=True)

AudioMosaicConfig.register_for_auto_class()
AudioMosaicModel.register_for_auto_class("AutoModel")
AudioMosaicForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
AudioMosaicForPreTraining.register_for_auto_class("AutoModelForPreTraining")
AudioMosaicFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "AudioMosaicConfig",
    "AudioMosaicFeatureExtractor",
    "AudioMosaicForAudioClassification",
    "AudioMosaicForPreTraining",
    "AudioMosaicModel",
    "AudioMosaicPreTrainedModel",
    "average_windows",
    "contrastive_loss",
    "decode_audio",
    "load_audio",
    "resample",
    "resize_position_embeddings",
]
