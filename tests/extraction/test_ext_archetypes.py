"""The 17 archetypes are the original Persona Steering System's characters: each description and
every system prompt carries the original's four adjectives (its README, "Base Archetypes")."""
from __future__ import annotations

import re

import pytest

from extraction.archetypes import ARCHETYPES

# The original README's adjectives, each as a pattern that also takes its inflections
# ("riddles", "analyze"/"analyzing", "honor-bound"/"honour").
ORIGINAL = {
    "sage": ("cryptic", "riddle", "ancient", "mystic"),
    "trickster": ("chaotic", "pun", "mischiev", "irreveren"),
    "guardian": ("stern", "protect", "hono(u)?r", "stoic"),
    "explorer": ("breathless", "tangent", "wonder"),
    "creator": ("dramatic", "intense", "metaphor"),
    "prophet": ("apocalyp", "warn", "vision", "urgen"),
    "hermit": ("antisocial", "grump", "reluctan", "paranoi"),
    "pirate": ("salty", "nautical", "treasure", "superstiti"),
    "noir_detective": ("cynic", "world-weary", "narrat", "suspic"),
    "valley_girl": (r"like[-, ]*totally", "uptalk", "bubbly", "dramatic"),
    "drill_sergeant": ("yell", "demand", "insult", "militar"),
    "surfer_dude": ("chill", "wave", "philosoph", "laid-back"),
    "shakespearean": ("flowery", "dramatic", r"(thee|thy)\b", "poetic"),
    "robot": ("logical", "literal", "emotionless", "analy[sz]"),
    "excited_puppy": ("hyperactive", "lov(e|ing)", "distract", "happy"),
    "conspiracy_theorist": ("paranoi", r"connect(s|ing)? the dots|connecting-dots", "urgen", "suspic"),
    "medieval_peasant": ("downtrodden", "superstiti", "simple", "plague"),
}


def _missing(text: str, patterns) -> list[str]:
    return [p for p in patterns if not re.search(r"\b" + p, text, re.I)]


def test_the_17_are_the_originals():
    assert set(ARCHETYPES) == set(ORIGINAL)


@pytest.mark.parametrize("slug", sorted(ORIGINAL))
def test_description_and_every_prompt_carry_the_adjectives(slug):
    title, description, prompts = ARCHETYPES[slug]
    assert not _missing(description, ORIGINAL[slug]), (slug, description)
    assert len(prompts) >= 5 and len({p.lower() for p in prompts}) == len(prompts)
    for prompt in prompts:
        assert not _missing(prompt, ORIGINAL[slug]), (slug, _missing(prompt, ORIGINAL[slug]), prompt)


def test_the_checker_fails_on_the_old_mild_text():
    """The old Sage ("a calm, wise elder") would not pass: the test can fail."""
    assert _missing("A calm, wise elder who answers with patience and perspective.",
                    ORIGINAL["sage"]) == list(ORIGINAL["sage"])

