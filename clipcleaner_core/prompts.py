"""Prompt templates and class descriptions: the text side of CLIPCleaner (DESIGN §2 step 2).

For each class k with descriptions d_k1..d_kP the prompts are ``"a photo of a {c_k} {d_kj}."``;
a class without descriptions uses the plain templates (``"a photo of a {c}."``, ...) instead.
Templates and descriptions are data: the built-in sets live in ``prompt_sets/*.json`` and a user can
save, edit and load their own with :func:`save_prompt_set` / :func:`load_prompt_set`.

JSON format (every key but ``descriptions`` optional)::

    {
      "name": "my-set",
      "notes": "free text",
      "description_template": "a photo of a {c} {d}.",
      "templates": ["a photo of a {c}.", "a blurry photo of a {c}."],
      "display_names": {"aquarium_fish": "aquarium fish"},
      "descriptions": {"cat": ["which has whiskers", "which has pointed ears"]}
    }

Class names are matched case-insensitively, with ``_`` and ``-`` read as spaces; a class's name in
prompts is its display name, else its class name with underscores shown as spaces.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from clipcleaner_core.atomic import hash_json, write_text
from clipcleaner_core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from clipcleaner_core.data.dataset import Dataset

PROMPT_SETS_DIR = Path(__file__).resolve().parent / "prompt_sets"
BUILTIN_NAMES = ("cifar10", "cifar100", "digits", "animal10n", "red_mini_imagenet", "webvision", "clothing1m",
                 "default")
# dataset kinds (the paper's formats) -> their built-in set
KIND_PROMPT_SETS = {"animal10n": "animal10n", "red-mini-imagenet": "red_mini_imagenet", "webvision": "webvision",
                    "clothing1m": "clothing1m"}
DEFAULT_DESCRIPTION_TEMPLATE = "a photo of a {c} {d}."
DEFAULT_TEMPLATES = (
    "a photo of a {c}.",
    "a blurry photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a close-up photo of a {c}.",
    "a bright photo of a {c}.",
    "a dark photo of a {c}.",
    "a cropped photo of a {c}.",
    "a photo of the small {c}.",
)
_KEYS = ("name", "notes", "description_template", "templates", "display_names", "descriptions")


def normalise_class_name(name: str) -> str:
    """Key used to match a dataset's class name with a prompt set's entry."""
    return " ".join(re.sub(r"[_\-]+", " ", str(name)).lower().split())


@dataclass(frozen=True)
class PromptSet:
    """Templates plus per-class descriptions.

    Attributes:
        templates: prompts for a class without descriptions; each contains ``{c}``.
        descriptions: class name -> short phrases ("which has wings"); may be empty.
        display_names: class name -> the words used for it in prompts (e.g. "0" -> "zero").
        description_template: how a description becomes a prompt; contains ``{c}`` and ``{d}``.
        name: a label for the set, shown in the UI and recorded in recipes.
    """

    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    descriptions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    display_names: Mapping[str, str] = field(default_factory=dict)
    description_template: str = DEFAULT_DESCRIPTION_TEMPLATE
    name: str = "custom"

    def __post_init__(self) -> None:
        templates = _string_tuple(self.templates, "templates")
        if not templates:
            raise DataError("prompt set: 'templates' is empty; give at least one, e.g. \"a photo of a {c}.\"")
        for template in templates:
            if "{c}" not in template:
                raise DataError(f"prompt set: template {template!r} has no {{c}} placeholder; add one "
                                "where the class name goes, e.g. \"a photo of a {c}.\"")
        if "{c}" not in self.description_template or "{d}" not in self.description_template:
            raise DataError(f"prompt set: description_template {self.description_template!r} needs both "
                            "{c} (class name) and {d} (description), e.g. \"a photo of a {c} {d}.\"")
        descriptions = _string_map(self.descriptions, "descriptions", tuple_values=True)
        display_names = _string_map(self.display_names, "display_names", tuple_values=False)
        object.__setattr__(self, "templates", templates)
        object.__setattr__(self, "descriptions", descriptions)
        object.__setattr__(self, "display_names", display_names)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "_descriptions_by_key", _by_key(descriptions, "descriptions"))
        object.__setattr__(self, "_display_by_key", _by_key(display_names, "display_names"))

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def display_name(self, class_name: str) -> str:
        """The words used for ``class_name`` in prompts."""
        key = normalise_class_name(class_name)
        return self._display_by_key.get(key, str(class_name).replace("_", " ").strip())

    def descriptions_for(self, class_name: str) -> tuple[str, ...]:
        """The descriptions of ``class_name`` (matched case/underscore-insensitively), maybe ()."""
        return self._descriptions_by_key.get(normalise_class_name(class_name), ())

    def class_prompts(self, class_name: str) -> list[str]:
        """All prompts of one class: one per description, or the templates when it has none."""
        shown = self.display_name(class_name)
        described = self.descriptions_for(class_name)
        if described:
            return [self.description_template.replace("{c}", shown).replace("{d}", d) for d in described]
        return [template.replace("{c}", shown) for template in self.templates]

    def prompts_for(self, class_names) -> tuple[list[str], np.ndarray]:
        """Prompts for K classes.

        Returns:
            texts: M prompt strings, grouped by class in class order.
            text_labels: (M,) int64, the class index of each prompt; every class has >= 1 prompt.
        """
        texts: list[str] = []
        labels: list[int] = []
        for k, class_name in enumerate(class_names):
            prompts = self.class_prompts(class_name)
            texts.extend(prompts)
            labels.extend([k] * len(prompts))
        return texts, np.asarray(labels, dtype=np.int64)

    def coverage(self, class_names) -> dict[str, int]:
        """Class name -> number of descriptions it has in this set (0 = uses the templates)."""
        return {str(c): len(self.descriptions_for(c)) for c in class_names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description_template": self.description_template,
            "templates": list(self.templates),
            "display_names": dict(self.display_names),
            "descriptions": {k: list(v) for k, v in self.descriptions.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "prompt set") -> "PromptSet":
        """Build from a parsed JSON object, refusing unknown keys and non-string entries."""
        if not isinstance(obj, dict):
            raise DataError(f"{source}: expected a JSON object with 'templates' and 'descriptions', "
                            f"got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise DataError(f"{source}: unknown key(s) {unknown}; valid keys are {list(_KEYS)}. "
                            "Rename or remove them.")
        try:
            return cls(
                templates=obj.get("templates", DEFAULT_TEMPLATES),
                descriptions=obj.get("descriptions", {}),
                display_names=obj.get("display_names", {}),
                description_template=_require_str(obj.get("description_template",
                                                          DEFAULT_DESCRIPTION_TEMPLATE),
                                                  "description_template"),
                name=_require_str(obj.get("name", "custom"), "name"),
            )
        except DataError as exc:
            raise DataError(f"{source}: {str(exc).removeprefix('prompt set: ')}") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "prompt set") -> "PromptSet":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                            f"{exc.colno}); fix the syntax, e.g. a missing comma or quote.") from None
        return cls.from_dict(obj, source=source)

    def fingerprint(self) -> str:
        """16 hex chars naming this set's content (scores cached per prompt set use it)."""
        return hash_json(self.to_dict())[:16]


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"prompt set: {what!r} must be a string, got {value!r}")
    return value


def _string_tuple(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise DataError(f"prompt set: {what} must be a list of strings, got {values!r}")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"prompt set: {what} entry {value!r} is not a non-empty string; "
                            "write each entry as a quoted phrase")
    return tuple(v.strip() for v in values)


def _string_map(values: Any, what: str, *, tuple_values: bool) -> dict:
    if not isinstance(values, Mapping):
        raise DataError(f"prompt set: {what} must be an object mapping class names to "
                        f"{'lists of strings' if tuple_values else 'strings'}, got {values!r}")
    result: dict = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key.strip():
            raise DataError(f"prompt set: {what} has a key {key!r} that is not a class name")
        if tuple_values:
            result[key] = _string_tuple(value, f"{what}[{key!r}]")
        else:
            result[key] = _require_str(value, f"{what}[{key!r}]").strip()
    return result


def _by_key(values: dict, what: str) -> dict:
    keyed: dict = {}
    for name, value in values.items():
        key = normalise_class_name(name)
        if key in keyed:
            raise DataError(f"prompt set: {what} lists the class {name!r} twice (names are matched "
                            "ignoring case, '_' and '-'); merge the entries")
        keyed[key] = value
    return keyed


def load_prompt_set(path: str | os.PathLike) -> PromptSet:
    """Read a prompt set JSON file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"prompt set {str(path)!r} cannot be read ({exc.strerror}); check the path") from None
    return PromptSet.from_json(text, source=f"prompt set {path.name!r}")


def save_prompt_set(prompt_set: PromptSet, path: str | os.PathLike) -> Path:
    """Write ``prompt_set`` as editable JSON, atomically."""
    return write_text(path, prompt_set.to_json())


def builtin_prompt_set(name: str) -> PromptSet:
    """One of the shipped sets (:data:`BUILTIN_NAMES`); "default" is templates only."""
    if name not in BUILTIN_NAMES:
        raise ConfigError(f"unknown built-in prompt set {name!r}; choose one of {list(BUILTIN_NAMES)}")
    if name == "default":
        return PromptSet(name="default")
    return load_prompt_set(PROMPT_SETS_DIR / f"{name}.json")


def prompt_set_for(dataset: "Dataset") -> PromptSet:
    """The built-in set that fits ``dataset``.

    The demo and digit datasets get "digits", CIFAR kinds their own set, a dataset whose classes
    are all described by a built-in set (e.g. a subset of CIFAR-10's classes) that set, anything
    else "default" (plain templates for every class).
    """
    if dataset.kind == "demo":
        return builtin_prompt_set("digits")
    if dataset.kind in ("cifar10", "cifar100"):
        return builtin_prompt_set(dataset.kind)
    if dataset.kind in KIND_PROMPT_SETS:
        return builtin_prompt_set(KIND_PROMPT_SETS[dataset.kind])
    keys = {normalise_class_name(c) for c in dataset.class_names}
    if keys == {str(d) for d in range(10)}:
        return builtin_prompt_set("digits")
    for name in ("cifar10", "cifar100"):
        candidate = builtin_prompt_set(name)
        if keys and keys <= set(candidate._descriptions_by_key):
            return candidate
    return builtin_prompt_set("default")
