"""Character names of children's stories: finding them, and resampling them per epoch.

Name resampling (issue: real-text LMs) replaces every name on the list below (as a
capitalised whole word) in a story, consistently within the story (same name, same
replacement) and keeping its gender (pronouns stay right), by a name drawn from the list. A
model trained on renamed copies cannot learn who does what from the name alone; it has to read
names from the context. Names not on the list (Jackie, Jacky) stay as written. A fixed fifth
of the list is held out and never used as a replacement: the IOI set of that setting uses
those names, which the renamed training text then never contains as names (a held-out name can
still begin another word: "Jack" is one BPE token because "Jackie" and "Jacky" are).
"""

from __future__ import annotations

import hashlib
import random
import re

from attnstreams.data.stories import FEMALE_NAMES, MALE_NAMES

# Beyond the generator's lists: the nicknames and names TinyStories uses, and common ones.
_FEMALE_MORE = (
    "Sue", "Susie", "Lulu", "Mimi", "Luna", "Bella", "Polly", "Dolly", "Penny", "Tilly",
    "Millie", "Rosie", "Annie", "Lila", "Zara", "Claire", "Julie", "Mandy", "Abigail", "Emmy",
    "Kiki", "Elly", "Jilly", "Sadie", "Gina", "Hailey", "Lexi", "Macy", "Nellie", "Paige",
    "Piper", "Quinn", "Riley", "Stella", "Tessa", "Uma", "Vera", "Willa", "Yara", "Zelda",
    "Abby", "Becky", "Cathy", "Dana", "Edna", "Flora", "Gemma", "Heidi", "Irene", "Joan",
    "Kara", "Lottie", "Mona", "Nadia", "Opal", "Pam", "Rita", "Sonia", "Tara", "Una", "Vicky",
    "Wanda", "Agnes", "Carla", "Della", "Elena", "Freya", "Greta", "Hilda", "Ingrid", "Jade",
    "Kelly", "Lana", "Maria", "Naomi", "Olga", "Priya", "Rhea", "Selma", "Thea", "Ursula",
    "Wilma", "Yvonne", "Zoey", "Audrey", "Brenda", "Cindy", "Doris", "Erin", "Fay", "Gloria",
    "Ida", "Jolene", "Karen", "Lydia", "Mabel", "Norma", "Petra", "Rebecca", "Shirley",
    "Trudy", "Vanessa", "Whitney", "Ariel", "Bonnie", "Carmen", "Dora", "Elise", "Fern",
    "Gwen", "Hattie", "Isla", "Josie", "Kylie", "Leila", "Marta", "Nancy", "Orla", "Pia",
    "Roxy", "Sasha", "Tamara", "Vivian",
)  # fmt: skip
_MALE_MORE = (
    "Tim", "Timmy", "Tommy", "Benny", "Bobby", "Sammy", "Jerry", "Andy", "Pete", "Teddy",
    "Toby", "Freddy", "Johnny", "Robby", "Ollie", "Remy", "Charlie", "Dave", "Pip", "Eddie",
    "Albert", "Barry", "Colin", "Derek", "Edgar", "Gary", "Harry", "Isaac", "Jonas", "Keith",
    "Larry", "Milo", "Ned", "Otto", "Perry", "Ralph", "Stan", "Terry", "Victor", "Wayne",
    "Abe", "Bruno", "Cody", "Dean", "Elliot", "Gavin", "Hank", "Igor", "Joel", "Kurt",
    "Lenny", "Mason", "Nate", "Omar", "Pablo", "Rick", "Seth", "Theo", "Vince", "Wade",
    "Zane", "Arlo", "Boris", "Caleb", "Dominic", "Emil", "Fabian", "George", "Hector",
    "Ivan", "Jude", "Kai", "Louis", "Marco", "Nolan", "Oren", "Quincy", "Rafael", "Soren",
    "Troy", "Vernon", "Warren", "Xavier", "Yusuf", "Zeke", "Andre", "Bernie", "Cyril",
    "Doug", "Ernie", "Floyd", "Glen", "Herbert", "Jeff", "Karl", "Lloyd", "Miles", "Neil",
    "Oswald", "Phil", "Rudy", "Shane", "Todd", "Vic", "Wes", "Ali", "Bert", "Clyde", "Dennis",
    "Ellis", "Gordon", "Howard", "Jacob", "Kenny", "Leon", "Manny", "Norman", "Ozzie",
    "Ronnie", "Stuart", "Trevor", "Ulrich", "Vito",
)  # fmt: skip

# Words that are names and also common English words a story uses otherwise (never touched).
AMBIGUOUS = frozenset(
    "Will Mark Grace Rose Daisy Holly Ivy Amber Poppy Hazel Violet Iris Olive Fern Joy Hope "
    "Sky Sunny Pepper Ray Jay Pip Bill May June Art Pat Frank Dean Rich Sandy Penny Page "
    "Paige Ruby Jade Opal Flora Faith Star Bear Red Blue Kitty Dolly Teddy "
    "Miles Glen Wade Pam Kai Uma Una Ida Fay Abe Ali Nancy Jolly".split()
)


def _clean(names) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for n in names:
        if n not in seen and n not in AMBIGUOUS:
            seen.add(n)
            out.append(n)
    return tuple(out)


FEMALE: tuple[str, ...] = _clean(FEMALE_NAMES + _FEMALE_MORE)
MALE: tuple[str, ...] = _clean(n for n in MALE_NAMES + _MALE_MORE if n not in set(FEMALE))
GENDER: dict[str, str] = {**{n: "f" for n in FEMALE}, **{n: "m" for n in MALE}}
# Every list name is letters only, so a name in a text is a whole run of word characters: one
# pass over the words with a set lookup finds them (4x faster than an alternation of 450 names).
_WORD_RE = re.compile(r"\w+")


def _held_out(name: str) -> bool:
    """A fixed fifth of the list, by a hash of the name (not by position, so adding names to
    the list does not move the others)."""
    return hashlib.blake2b(name.encode(), digest_size=8).digest()[0] % 5 == 0


#: Replacement names (never used by the held-out IOI set), by gender.
POOL: dict[str, tuple[str, ...]] = {
    g: tuple(n for n in names if not _held_out(n)) for g, names in (("f", FEMALE), ("m", MALE))
}
#: Names never used as replacements: the IOI names of the name-resampling setting.
HELD_OUT: tuple[str, ...] = tuple(n for n in FEMALE + MALE if _held_out(n))


def find_names(text: str) -> list[str]:
    """Character names in a story (list names, as whole capitalised words), in order."""
    return [w for w in _WORD_RE.findall(text) if w in GENDER]


def resample_names(text: str, rng: random.Random) -> str:
    """The story with every list name replaced by a replacement-pool name of the same gender;
    the same name gets the same replacement throughout, and two names never collapse into one."""
    found = dict.fromkeys(find_names(text))  # in order, unique
    if not found:
        return text
    mapping: dict[str, str] = {}
    for g in ("f", "m"):
        mine = [n for n in found if GENDER[n] == g]
        if mine:
            mapping |= dict(zip(mine, rng.sample(POOL[g], len(mine)), strict=True))
    return _WORD_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)
