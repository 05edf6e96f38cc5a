"""AudioMosaic for Hugging Face transformers.

Importing the package registers the classes with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForAudioClassification`, `AutoModelForPreTraining`, `AutoFeatureExtractor`; for the audio-language model
`AutoConfig`, `AutoModelForCausalLM` and `AutoProcessor`) and for `auto_map`, so that
`save_pretrained` folders also load with `trust_remote_code=True` where this package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCausalLM,
    AutoModelForPreTraining,
    AutoProcessor,
)

from .configuration_audiomosaic import AudioMosaicConfig
from .configuration_audiomosaic_ltu import AudioMosaicLtuConfig
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
from .modeling_audiomosaic_ltu import AudioMosaicLtuForConditionalGeneration, pool_audio_tokens
from .processing_audiomosaic_ltu import AudioMosaicLtuProcessor


AutoConfig.register(AudioMosaicConfig.model_type, AudioMosaicConfig, exist_ok=True)
AutoModel.register(AudioMosaicConfig, AudioMosaicModel, exist_ok=True)
AutoModelForAudioClassification.register(AudioMosaicConfig, AudioMosaicForAudioClassification, exist_ok=True)
AutoModelForPreTraining.register(AudioMosaicConfig, AudioMosaicForPreTraining, exist_ok=True)
AutoFeatureExtractor.register(AudioMosaicConfig, AudioMosaicFeatureExtractor, exist_ok=True)
AutoConfig.register(AudioMosaicLtuConfig.model_type, AudioMosaicLtuConfig, exist_ok=True)
AutoModelForCausalLM.register(AudioMosaicLtuConfig, AudioMosaicLtuForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AudioMosaicLtuConfig, AudioMosaicLtuProcessor, exist_ok=True)

AudioMosaicConfig.register_for_auto_class()
AudioMosaicModel.register_for_auto_class("AutoModel")
AudioMosaicForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
AudioMosaicForPreTraining.register_for_auto_class("AutoModelForPreTraining")
AudioMosaicFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
AudioMosaicLtuConfig.register_for_auto_class()
AudioMosaicLtuForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
AudioMosaicLtuProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AudioMosaicConfig",
    "AudioMosaicFeatureExtractor",
    "AudioMosaicForAudioClassification",
    "AudioMosaicForPreTraining",
    "AudioMosaicLtuConfig",
    "AudioMosaicLtuForConditionalGeneration",
    "AudioMosaicLtuProcessor",
    "AudioMosaicModel",
    "AudioMosaicPreTrainedModel",
    "average_windows",
    "contrastive_loss",
    "decode_audio",
    "load_audio",
    "pool_audio_tokens",
    "resample",
    "resize_position_embeddings",
]
