"""The offline TinyStories-like generator: determinism, names, lengths, transfers, and the
IOI-out-of-distribution constraint (no "NAME and NAME", no "When NAME ...")."""

import re
from collections import Counter

import pytest

from attnstreams.data.stories import (
    FEMALE_NAMES,
    FIRST_NAMES,
    GENDER,
    MALE_NAMES,
    OBJECTS,
    PLACES,
    StoryGenerator,
    forbidden_spans,
    generate_stories,
)

_NAMES = "|".join(sorted(FIRST_NAMES, key=len, reverse=True))
_NAME_RE = re.compile(rf"\b({_NAMES})\b")
_VERBS = "gave|handed|passed|threw|showed|brought|tossed|offered|lent|sent"
_TRANSFER_RE = re.compile(rf"\b({_NAMES}) ({_VERBS})\b[^.!?\"]*\bto ({_NAMES})\b")
_AND_RE = re.compile(rf"\b({_NAMES}) and ({_NAMES})\b")
_START_RE = re.compile(rf"(?:^|[.!?\"]\s*)(?:When|After|While|Then,) ({_NAMES})\b", re.M)


@pytest.fixture(scope="module")
def stories() -> list[str]:
    return list(generate_stories(20_000, seed=0))


def test_deterministic():
    a = list(generate_stories(50, seed=3))
    assert a == list(generate_stories(50, seed=3))
    assert a != list(generate_stories(50, seed=4))
    assert len(set(a)) == 50
    g = StoryGenerator(3)
    assert [g.story() for _ in range(50)] == a


def test_unbounded_and_counted():
    it = generate_stories(seed=1)
    assert len([next(it) for _ in range(10)]) == 10
    assert len(list(generate_stories(7, seed=1))) == 7
    assert list(generate_stories(0)) == []


def test_names():
    assert len(set(FIRST_NAMES)) == len(FIRST_NAMES) >= 200
    assert all(re.fullmatch(r"[A-Z][a-z]+", n) for n in FIRST_NAMES)
    assert sum(len(n) <= 5 for n in FIRST_NAMES) >= 100
    assert sum(len(n) >= 7 for n in FIRST_NAMES) >= 60
    assert set(FEMALE_NAMES).isdisjoint(MALE_NAMES)
    assert set(GENDER) == set(FIRST_NAMES)
    assert {GENDER[n] for n in FEMALE_NAMES} == {"f"} and {GENDER[n] for n in MALE_NAMES} == {"m"}
    assert len(FEMALE_NAMES) >= 80 and len(MALE_NAMES) >= 80


def test_places_objects():
    assert len(set(PLACES)) == len(PLACES) >= 30
    assert len(set(OBJECTS)) == len(OBJECTS) >= 60
    assert all(o.isascii() and o == o.lower() for o in PLACES + OBJECTS)


def test_word_counts(stories):
    counts = [len(s.split()) for s in stories[:500]]
    assert min(counts) >= 80 and max(counts) <= 300
    assert 100 <= sum(counts) / len(counts) <= 250


def test_transfers(stories):
    sample = stories[:2000]
    assert sum(bool(_TRANSFER_RE.search(s)) for s in sample) >= 0.8 * len(sample)
    verbs = Counter(m.group(2) for s in sample for m in _TRANSFER_RE.finditer(s))
    assert set(verbs) == set(_VERBS.split("|")), verbs


def test_names_vary_and_repeat(stories):
    names = Counter(_NAME_RE.findall(" ".join(stories[:3000])))
    assert len(names) >= 150
    # Names repeat within a story (the model has to use the context), and the cast changes.
    per_story = [Counter(_NAME_RE.findall(s)) for s in stories[:1000]]
    assert all(2 <= len(c) <= 4 for c in per_story)
    assert sum(max(c.values()) >= 4 for c in per_story) >= 900
    pairs = Counter(frozenset(c) for c in per_story)
    assert pairs.most_common(1)[0][1] <= 3


def test_no_forbidden_spans(stories):
    for s in stories:
        assert not forbidden_spans(s), (forbidden_spans(s), s)
    # An independent check with the name-alternation regexes.
    for s in stories[:2000]:
        assert not _AND_RE.search(s), s
        assert not _START_RE.search(s), s


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Tom and Mia went home.", ["Tom and Mia"]),
        ("When Tom went home", ["When Tom"]),
        ("After Lily ate, she slept.", ["After Lily"]),
        ("Then, Bartholomew and Xiomara had a long argument.", None),
        ('"Hi!" said Sam. While Ben played, Zoe and Max and Leo sang.', None),
    ],
)
def test_forbidden_spans_finds_bad_text(text, expected):
    spans = forbidden_spans(text)
    assert spans
    if expected is not None:
        assert spans == expected
    assert all(" and " in s or s.split()[0] in ("When", "After", "While", "Then,") for s in spans)


def test_forbidden_spans_allows_good_text():
    ok = (
        "Lily and her friend Tom went to the park with Mia. The two friends played. "
        "When they got home, Tom gave the ball to Lily. Then Sara passed the cup to Ben. "
        "Tom and Grandma smiled. Mia and grace, mia and Ben, when Tom sat. "
        "Annabel and Tomas are not in the list."
    )
    assert forbidden_spans(ok) == []
    assert forbidden_spans("Then, Ann and Zoe left.") == ["Ann and Zoe", "Then, Ann"]
    assert forbidden_spans("Tom and Mia and Sam.") == ["Tom and Mia", "Mia and Sam"]


def test_pronouns_follow_gender():
    g = StoryGenerator(11)
    he = re.compile(r"\b(he|him|his|himself)\b", re.I)
    she = re.compile(r"\b(she|her|hers|herself)\b", re.I)
    seen = Counter()
    for _ in range(3000):
        text = g.story()
        genders = {gender for _, gender in g.last_cast}
        assert set(_NAME_RE.findall(text)) == {n for n, _ in g.last_cast if n in GENDER}
        if genders == {"f"}:
            seen["f"] += 1
            assert not he.search(text), text
        elif genders == {"m"}:
            seen["m"] += 1
            assert not she.search(text), text
    assert seen["f"] >= 50 and seen["m"] >= 50


def test_text_format(stories):
    for s in stories[:3000]:
        assert s.isascii()
        assert "<|endoftext|>" not in s
        assert "{" not in s and "}" not in s and "  " not in s
        assert s == s.strip() and s[0].isupper() and s[-1] in '.!"'
        assert s.count('"') % 2 == 0
        assert "\n\n" not in s
