"""The description sets of the paper's datasets cover every class the loaders produce."""
import pytest

import paper_layouts
from clipcleaner_core.data import load_dataset
from clipcleaner_core.data.animal10n import ANIMAL10N_CLASSES
from clipcleaner_core.data.clothing1m import CLOTHING1M_CLASSES
from clipcleaner_core.data.red_mini_imagenet import RED_MINI_IMAGENET_CLASSES
from clipcleaner_core.data.webvision import WEBVISION_CLASSES
from clipcleaner_core.prompts import builtin_prompt_set, prompt_set_for

SETS = {"animal10n": ANIMAL10N_CLASSES, "red_mini_imagenet": RED_MINI_IMAGENET_CLASSES,
        "webvision": WEBVISION_CLASSES, "clothing1m": CLOTHING1M_CLASSES}


@pytest.mark.parametrize("name", list(SETS))
def test_every_class_has_about_eight_distinct_which_phrases(name):
    prompt_set = builtin_prompt_set(name)
    classes = SETS[name]
    assert set(prompt_set.descriptions) == set(classes)
    for class_name in classes:
        phrases = prompt_set.descriptions_for(class_name)
        assert 6 <= len(phrases) <= 10 and len(set(phrases)) == len(phrases), class_name
        assert all(p.startswith("which ") for p in phrases), class_name
    texts, labels = prompt_set.prompts_for(classes)
    assert len(set(labels.tolist())) == len(classes) and len(texts) == len(labels)


def test_clothing_prompts_say_it_is_clothing():
    texts, _ = builtin_prompt_set("clothing1m").prompts_for(["Down Coat"])
    assert texts[0].startswith("a photo of a down coat, a type of clothing, which ")


def test_each_paper_dataset_gets_its_own_set(tmp_path):
    roots = {"animal10n": paper_layouts.animal10n(tmp_path / "a"),
             "webvision": paper_layouts.webvision(tmp_path / "w", per_class=1, imagenet_per_class=0),
             "clothing1m": paper_layouts.clothing1m(tmp_path / "c"),
             "red_mini_imagenet": paper_layouts.red_mini_imagenet(tmp_path / "r", per_class=1)
             / "split" / "red_noise_nl_0.4"}
    for name, spec in roots.items():
        assert prompt_set_for(load_dataset(spec)).name == name
