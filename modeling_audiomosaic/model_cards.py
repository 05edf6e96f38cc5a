"""Model cards from the package's `model_card.md` (a Jinja template rendered by `huggingface_hub.ModelCard`), shared
by `audiomosaic publish` (trained runs) and `audiomosaic convert-official --all-releases` (the authors' releases)."""

from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


# The repository's model_card.md, shipped as package data (a link to it in the checkout).
TEMPLATE = resources.files("modeling_audiomosaic") / "model_card.md"


def render_model_card(card_data: ModelCardData, template_path: str | Path | None = None, **template_kwargs) -> ModelCard:
    """The card: YAML front matter from `card_data`, body from the template (default `model_card.md`)."""
    template = Path(template_path).read_text(encoding="utf-8") if template_path else TEMPLATE.read_text("utf-8")
    return ModelCard.from_template(card_data, template_str=template, **template_kwargs)
