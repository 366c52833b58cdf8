import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import Catalog, load_catalog
from bot.complete import complete_name, complete_weighted

CATALOG = load_catalog()


def _many_loras(count: int) -> Catalog:
    rows = "\n".join(f'[lora.style-{n:03d}]\narchitecture = "sdxl"\nlocal = "x/style-{n}"\n' for n in range(count))
    rows += '\n[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\n'
    return Catalog.from_toml(rows)


@pytest.mark.parametrize(
    ("typed", "values"),
    [
        ("pix", ["pixel-art"]),
        ("", ["pixel-art", "tiny-lora", "tiny-lora-2", "toy-face"]),
        ("pixel-art:0.8, to", ["pixel-art:0.8, toy-face"]),
        ("pixel-art:0.8, toy:0.5", ["pixel-art:0.8, toy-face:0.5"]),
        ("pixel-art, ", ["pixel-art, tiny-lora", "pixel-art, tiny-lora-2", "pixel-art, toy-face"]),
        ("nothing-like-it", []),
    ],
)
def test_lora_suggestions_complete_the_last_item(typed, values):
    """Only the item being typed is completed; the ones before stay; names already used are not offered."""
    assert [s.value for s in complete_weighted(CATALOG, "lora", typed)] == values


def test_search_covers_the_whole_catalog_not_the_first_25():
    """With 300 LoRAs, typing the last one's name finds it."""
    catalog = _many_loras(300)
    assert [s.value for s in complete_weighted(catalog, "lora", "style-299")] == ["style-299"]
    assert len(complete_weighted(catalog, "lora", "style")) == 25


def test_model_suggestions_show_descriptions():
    (suggestion,) = complete_name(CATALOG, "model", "turbo")
    assert suggestion.value == "sdxl-turbo"
    assert suggestion.label.startswith("sdxl-turbo — ")


@given(st.text(max_size=300))
def test_any_typed_text_gives_valid_choices(typed):
    """Whatever is typed, every choice fits Discord's 100-character limit and never more than 25 come back."""
    for complete in (complete_weighted, lambda c, k, t: complete_name(c, k, t)):
        suggestions = complete(CATALOG, "lora", typed)
        assert len(suggestions) <= 25
        assert all(1 <= len(s.label) <= 100 and 1 <= len(s.value) <= 100 for s in suggestions)
