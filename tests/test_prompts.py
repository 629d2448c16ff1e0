"""Prompt sets: built-in coverage, prompt strings, fallbacks, JSON round-trip and validation."""
import json
from pathlib import Path

import numpy as np
import pytest

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.errors import DataError
from clipcleaner_core.prompts import (
    BUILTIN_NAMES,
    PromptSet,
    builtin_prompt_set,
    load_prompt_set,
    prompt_set_for,
    save_prompt_set,
)

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter
palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket
rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper
table tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
woman worm""".split())
DIGITS = tuple(str(d) for d in range(10))


def make_dataset(kind, class_names):
    k = len(class_names)
    return Dataset(name="t", kind=kind, root=Path("."), class_names=class_names,
                   labels=np.arange(k) % k, paths=[f"{i}.png" for i in range(k)])


@pytest.mark.parametrize("name, classes", [("cifar10", CIFAR10), ("cifar100", CIFAR100), ("digits", DIGITS)])
def test_builtin_set_describes_every_class_with_six_or_more_phrases(name, classes):
    assert len(classes) == len(set(classes)) and len(CIFAR100) == 100
    prompt_set = builtin_prompt_set(name)
    coverage = prompt_set.coverage(classes)
    assert min(coverage.values()) >= 6, {c: n for c, n in coverage.items() if n < 6}
    assert len(prompt_set.descriptions) == len(classes)
    texts, labels = prompt_set.prompts_for(classes)
    assert len(set(texts)) == len(texts), "a prompt is repeated"
    assert np.array_equal(np.unique(labels), np.arange(len(classes)))


def test_prompts_read_as_in_the_paper():
    texts, labels = builtin_prompt_set("cifar10").prompts_for(["airplane", "cat"])
    assert texts[0] == "a photo of a airplane which has wings."
    assert labels.dtype == np.int64 and labels[0] == 0 and labels[-1] == 1
    assert all(t.startswith("a photo of a cat which ") for t, k in zip(texts, labels) if k == 1)


def test_underscored_names_shown_with_spaces_and_digits_spelled_out():
    texts, _ = builtin_prompt_set("cifar100").prompts_for(["aquarium_fish"])
    assert texts[0].startswith("a photo of a aquarium fish which ")
    texts, _ = builtin_prompt_set("digits").prompts_for(["0"])
    assert texts[0] == "a photo of the digit zero which is a handwritten zero."


def test_class_names_match_ignoring_case_and_separators():
    texts, _ = builtin_prompt_set("cifar100").prompts_for(["Aquarium Fish", "maple-tree"])
    assert len(texts) == 16 and "which" in texts[0] and "which" in texts[-1]


def test_class_without_descriptions_falls_back_to_templates():
    prompt_set = builtin_prompt_set("cifar10")
    texts, labels = prompt_set.prompts_for(["cat", "zebra"])
    zebra = [t for t, k in zip(texts, labels) if k == 1]
    assert zebra == [t.replace("{c}", "zebra") for t in prompt_set.templates]
    assert "a photo of a zebra." in zebra


def test_default_set_is_templates_only():
    texts, labels = builtin_prompt_set("default").prompts_for(["x", "y"])
    assert len(texts) == 2 * len(builtin_prompt_set("default").templates) and texts[0] == "a photo of a x."


def test_json_round_trip_keeps_prompts_and_fingerprint(tmp_path):
    original = builtin_prompt_set("digits")
    path = save_prompt_set(original, tmp_path / "digits.json")
    loaded = load_prompt_set(path)
    assert loaded == original and loaded.fingerprint() == original.fingerprint()
    assert loaded.prompts_for(DIGITS)[0] == original.prompts_for(DIGITS)[0]


def test_fingerprint_changes_with_a_description():
    a = PromptSet(descriptions={"cat": ["which has whiskers"]})
    b = PromptSet(descriptions={"cat": ["which has stripes"]})
    assert a.fingerprint() != b.fingerprint() and hash(a) != hash(b)


@pytest.mark.parametrize("payload, needle", [
    ({"descriptions": {}, "colour": 1}, "unknown key(s) ['colour']"),
    ({"descriptions": {"cat": ["which purrs", 3]}}, "descriptions['cat'] entry 3"),
    ({"descriptions": {"cat": "which purrs"}}, "descriptions['cat'] must be a list of strings"),
    ({"templates": ["a photo"]}, "has no {c} placeholder"),
    ({"templates": []}, "'templates' is empty"),
    ({"display_names": {"0": 0}}, "display_names['0']"),
    ({"descriptions": {"Cat": ["a"], "cat": ["b"]}}, "twice"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_json_is_refused_naming_the_entry(tmp_path, payload, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError) as info:
        load_prompt_set(path)
    assert needle in str(info.value) and "bad.json" in str(info.value)


def test_invalid_json_syntax_names_the_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"descriptions": {"cat": ["a" "b"]}}')
    with pytest.raises(DataError, match="not valid JSON .* line 1"):
        load_prompt_set(path)


def test_unknown_builtin_lists_the_valid_names():
    with pytest.raises(ValueError, match="cifar10"):
        builtin_prompt_set("imagenet")


@pytest.mark.parametrize("kind, classes, expected", [
    ("demo", DIGITS, "digits"),
    ("cifar10", CIFAR10, "cifar10"),
    ("cifar100", CIFAR100, "cifar100"),
    ("imagefolder", CIFAR10, "cifar10"),
    ("imagefolder", ("cat", "dog"), "cifar10"),
    ("manifest", ("apple", "maple_tree"), "cifar100"),
    ("imagefolder", DIGITS, "digits"),
    ("imagefolder", ("cat", "spaceship"), "default"),
])
def test_prompt_set_for_picks_by_kind_and_class_names(kind, classes, expected):
    assert prompt_set_for(make_dataset(kind, classes)).name == expected


def test_every_builtin_loads():
    assert {builtin_prompt_set(name).name for name in BUILTIN_NAMES} == set(BUILTIN_NAMES)
