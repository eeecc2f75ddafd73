"""Class names, prompt templates and held-out synonyms for open-vocabulary evaluation.

`CLASSES` is the closed set we train on (the SynthRooms classes without "void"). `HELD_OUT` maps each class to names that must never appear in
training prompts (synonyms, paraphrases); querying with them tests that the features are really aligned
with language and not with a fixed label index.

    >>> prompts_for("sofa", ("a photo of a {}.", "{} in a room."))
    ['a photo of a sofa.', 'sofa in a room.']
    >>> pluralize("shelf")
    'shelves'
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "wall", "floor", "ceiling", "door", "window", "chair", "table", "sofa", "bed",
    "cabinet", "shelf", "lamp", "plant", "tv", "rug", "desk", "box",
)

# Never used for training: synonyms / paraphrases of each class (open-vocabulary honesty check).
HELD_OUT: dict[str, tuple[str, ...]] = {
    "wall": ("partition", "room divider wall"),
    "floor": ("flooring", "ground underfoot"),
    "ceiling": ("overhead ceiling", "roof of the room"),
    "door": ("doorway", "entrance door"),
    "window": ("windowpane", "glass pane"),
    "chair": ("seat", "armchair"),
    "table": ("dining table", "tabletop"),
    "sofa": ("couch", "settee"),
    "bed": ("mattress", "bunk"),
    "cabinet": ("cupboard", "wardrobe"),
    "shelf": ("bookcase", "shelving"),
    "lamp": ("light fixture", "floor light"),
    "plant": ("houseplant", "potted plant"),
    "tv": ("screen", "television set"),
    "rug": ("carpet", "mat"),
    "desk": ("writing desk", "workstation"),
    "box": ("carton", "crate"),
}

# Default templates (a short CLIP-style ensemble); users may pass their own.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a {} in a room.",
    "there is a {} in the scene.",
)
PLURAL_TEMPLATES: tuple[str, ...] = ("a photo of {}.", "{} in a room.")

# LERF-style canonical negatives for relevancy maps.
CANONICAL_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")

_IRREGULAR = {"shelf": "shelves", "person": "people", "mouse": "mice", "leaf": "leaves", "knife": "knives"}


def pluralize(name: str) -> str:
    """English plural of the last word of `name` (enough for object nouns)."""
    head, _, last = name.rpartition(" ")
    if last in _IRREGULAR:
        plural = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def prompts_for(name: str, templates: tuple[str, ...] | list[str] = TEMPLATES, plural: bool = False) -> list[str]:
    """Fill each template with `name` (pluralised first if `plural`)."""
    word = pluralize(name) if plural else name
    return [t.format(word) for t in templates]


def held_out_names() -> list[str]:
    """Every held-out name, flat."""
    return [n for names in HELD_OUT.values() for n in names]


def default_prompts() -> list[str]:
    """The prompts that openlsm's default labels, held-out names and relevancy negatives embed (`TEMPLATES`)."""
    names = [*CLASSES, *held_out_names(), *CANONICAL_NEGATIVES]
    return list(dict.fromkeys(p for n in names for p in prompts_for(n, TEMPLATES)))
