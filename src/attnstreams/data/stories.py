"""Offline generator of TinyStories-like children's stories (Eldan & Li 2023 style).

The stories are short, simple and grammatical, with 2 to 4 named children (plus sometimes Mom,
Dad, Grandma or Grandpa), places, objects, feelings, short dialogue and a small plot: a problem,
help and a happy ending or a lesson.  Most stories contain at least one transfer between named
characters ("Lily gave the ball to Tom.", "Max threw the frisbee to Zoe."), and names recur
throughout, so a language model has to use the context to predict which name comes next.

The text is kept out of the distribution of the indirect-object-identification (IOI) templates:
two names are never joined by " and " ("Tom and Mia"), and no sentence starts with "When NAME",
"After NAME", "While NAME" or "Then, NAME".  :func:`forbidden_spans` finds such spans.

    >>> from attnstreams.data.stories import generate_stories
    >>> texts = list(generate_stories(3, seed=0))

Pure Python, deterministic for a seed (``random.Random``), several thousand stories a second.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

__all__ = [
    "FEMALE_NAMES",
    "FIRST_NAMES",
    "GENDER",
    "LONG_NAMES",
    "MALE_NAMES",
    "OBJECTS",
    "PLACES",
    "SHORT_NAMES",
    "StoryGenerator",
    "forbidden_spans",
    "generate_stories",
]

# ---------------------------------------------------------------------------------------------
# Names.  "Short" names are common English names, most of them one GPT-2 token with a leading
# space (" Tom", " Lily"); "long" names are rarer and split into several tokens.
# ---------------------------------------------------------------------------------------------

_FEMALE_SHORT = (
    "Lily", "Anna", "Mia", "Zoe", "Sara", "Emma", "Amy", "Lucy", "Kate", "Ella", "Ava", "Ruby",
    "Grace", "Lisa", "Mary", "Jane", "Sue", "Ann", "Eva", "Nina", "Tina", "Rosa", "Jenny",
    "Molly", "Sally", "Julia", "Clara", "Alice", "Laura", "Ellie", "Chloe", "Maya", "Lena",
    "Leah", "Nora", "Ivy", "Ada", "Iris", "Jill", "Beth", "Kim", "Meg", "Amber", "Daisy",
    "Holly", "Lola", "Poppy", "Elsa", "Susan", "Helen", "Diana", "Fiona", "Wendy", "Megan",
    "Sarah", "Emily", "Katie", "Jess", "Linda", "Betty",
)  # fmt: skip
_MALE_SHORT = (
    "Tom", "Sam", "Ben", "Max", "Leo", "Jack", "Tim", "Bob", "Joe", "Dan", "Jim", "Ted", "Ryan",
    "Adam", "Mark", "Paul", "Luke", "John", "Mike", "Nick", "Alex", "Eric", "Fred", "Carl",
    "Hugo", "Owen", "Noah", "Liam", "Jake", "Kyle", "Sean", "Ian", "Ray", "Roy", "Gus", "Finn",
    "Oscar", "Henry", "Peter", "Billy", "Jimmy", "Danny", "Kevin", "Steve", "Frank", "James",
    "David", "Jason", "Simon", "Tony", "Eli", "Jay", "Zack", "Lucas", "Ethan", "Dylan", "Aaron",
    "Brian", "Chris", "Scott",
)  # fmt: skip
_FEMALE_MEDIUM = (
    "Sophie", "Hannah", "Rachel", "Olivia", "Violet", "Sylvia", "Maggie", "Bianca", "Hazel",
    "Martha", "Esther", "Phoebe",
)  # fmt: skip
_MALE_MEDIUM = (
    "Oliver", "Daniel", "Jasper", "Thomas", "Samuel", "Martin", "Walter", "Arthur", "Rupert",
    "Gideon", "Tobias", "Felix",
)  # fmt: skip
_FEMALE_LONG = (
    "Xiomara", "Evangeline", "Clementine", "Cordelia", "Eleanora", "Genevieve", "Isadora",
    "Marigold", "Octavia", "Rosalind", "Seraphina", "Valentina", "Wilhelmina", "Anastasia",
    "Bernadette", "Esmeralda", "Gwendolyn", "Hyacinth", "Leonora", "Ophelia", "Penelope",
    "Prudence", "Theodora", "Winifred", "Yolanda", "Clarissa", "Dorothea", "Felicity", "Imogene",
    "Josephine", "Lavinia", "Millicent", "Ottoline", "Philippa", "Tabitha", "Beatrice",
    "Cassandra", "Gertrude", "Harriet", "Jacqueline", "Lucinda", "Georgiana", "Henrietta",
    "Mathilda", "Araminta", "Philomena", "Persephone", "Rosamund", "Guinevere", "Temperance",
)  # fmt: skip
_MALE_LONG = (
    "Bartholomew", "Ignatius", "Thaddeus", "Cornelius", "Ptolemy", "Leopold", "Archibald",
    "Barnaby", "Desmond", "Horatio", "Jebediah", "Lysander", "Nathaniel", "Percival", "Quentin",
    "Ulysses", "Zachariah", "Casimir", "Demetrius", "Fitzgerald", "Mortimer", "Nicodemus",
    "Reginald", "Sebastian", "Zebedee", "Augustus", "Benedict", "Ebenezer", "Humphrey",
    "Maximilian", "Montgomery", "Solomon", "Wolfgang", "Alistair", "Frederick", "Kingsley",
    "Marcellus", "Norbert", "Bertrand", "Cuthbert", "Evander", "Obadiah", "Phineas",
    "Rutherford", "Sylvester", "Theodoric", "Ambrose", "Crispin", "Lorenzo", "Florian",
)  # fmt: skip

FEMALE_NAMES: tuple[str, ...] = _FEMALE_SHORT + _FEMALE_MEDIUM + _FEMALE_LONG
MALE_NAMES: tuple[str, ...] = _MALE_SHORT + _MALE_MEDIUM + _MALE_LONG
FIRST_NAMES: tuple[str, ...] = FEMALE_NAMES + MALE_NAMES
#: "f" or "m" for every name in FIRST_NAMES (pronouns she/her or he/him/his).
GENDER: dict[str, str] = {**{n: "f" for n in FEMALE_NAMES}, **{n: "m" for n in MALE_NAMES}}
#: Common names, mostly single GPT-2 tokens (drawn 70% of the time).
SHORT_NAMES: tuple[str, ...] = _FEMALE_SHORT + _MALE_SHORT + _FEMALE_MEDIUM + _MALE_MEDIUM
#: Long or rare names, multi-token in GPT-2 (drawn 30% of the time).
LONG_NAMES: tuple[str, ...] = _FEMALE_LONG + _MALE_LONG

# Unnamed grown-ups: named by title, never part of FIRST_NAMES.
_ADULTS = (("Mom", "f"), ("Dad", "m"), ("Grandma", "f"), ("Grandpa", "m"))

# ---------------------------------------------------------------------------------------------
# Places and objects.
# ---------------------------------------------------------------------------------------------

PLACES: tuple[str, ...] = (
    "park", "beach", "forest", "school", "garden", "playground", "farm", "lake", "river", "zoo",
    "library", "market", "hill", "meadow", "pond", "field", "backyard", "bakery", "toy shop",
    "woods", "town square", "campsite", "swimming pool", "barn", "orchard", "museum", "fair",
    "village green", "harbor", "valley", "castle", "circus", "bus stop", "sandbox",
)  # fmt: skip

_THROWABLE = (
    "ball", "red ball", "big ball", "blue ball", "frisbee", "beanbag", "soft ball",
    "bouncy ball", "striped ball",
)  # fmt: skip
_STUCKABLE = ("kite", "red kite", "paper plane", "balloon", "yellow balloon", "hat", "frisbee")
_TOYS = (
    "teddy bear", "toy car", "toy boat", "doll", "yo-yo", "jump rope", "puzzle", "drum",
    "whistle", "spinning top", "toy train", "robot", "toy truck", "rag doll", "toy horse",
    "little wooden duck",
)  # fmt: skip
_FOODS = (
    "apple", "banana", "cookie", "sandwich", "cupcake", "orange", "pear", "muffin", "lollipop",
    "carrot", "peach", "biscuit", "plum", "piece of cake",
)  # fmt: skip
_FINDS = (
    "shell", "shiny shell", "smooth stone", "feather", "blue feather", "red leaf", "shiny coin",
    "pine cone", "pretty rock", "acorn",
)  # fmt: skip
_GIFTS = (
    "flower", "red flower", "picture book", "card", "drawing", "necklace", "ribbon", "bracelet",
    "box of crayons", "little cake", "star sticker", "paper crown",
)  # fmt: skip
_THINGS = (
    "book", "crayon", "pencil", "paintbrush", "scarf", "blanket", "cup", "bucket", "shovel",
    "umbrella", "bell", "map", "jar", "basket", "lunch box", "water bottle",
)  # fmt: skip

_food_plural = (
    "cookies", "grapes", "cherries", "berries", "candies", "strawberries", "crackers", "nuts",
)  # fmt: skip
OBJECTS: tuple[str, ...] = tuple(
    dict.fromkeys(_THROWABLE + _STUCKABLE + _TOYS + _FOODS + _FINDS + _GIFTS + _THINGS)
)
_PORTABLE = tuple(dict.fromkeys(_THROWABLE + _TOYS + _THINGS + ("kite", "hat")))
_SHAREABLE = tuple(dict.fromkeys(_TOYS + _THINGS + ("ball", "kite", "frisbee", "red ball")))


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


_ARTICLE = {o: _a(o) for o in OBJECTS}

# Fillers.
_ADJ = (
    "happy", "kind", "curious", "brave", "shy", "friendly", "cheerful", "clever", "playful",
    "gentle", "silly", "sweet", "funny", "good", "busy", "smart",
)  # fmt: skip
_MOOD = ("happy", "cheerful", "kind", "helpful", "busy", "friendly")
_TOWN = (
    "small town", "little village", "big city", "quiet town", "sunny village", "town by the sea",
    "village near the woods",
)  # fmt: skip
_HOME = (
    "small house", "yellow house", "little house by the river", "big house with a red door",
    "cozy cottage", "blue house on a hill",
)  # fmt: skip
_DAY = (
    "day", "sunny morning", "bright morning", "warm afternoon", "Saturday", "cold morning",
    "windy day", "rainy afternoon", "summer day",
)  # fmt: skip
_ACT = (
    "play with blocks", "draw pictures", "sing songs", "run and jump", "read books", "dance",
    "ride a bike", "fly kites", "build sandcastles", "look at the stars", "pick flowers",
    "splash in puddles", "climb trees", "bake cookies", "play hide and seek", "feed the ducks",
    "paint", "play ball", "count the clouds", "jump rope", "play pretend",
)  # fmt: skip
_GAME = (
    "tag", "hide and seek", "catch", "a game of pretend", "a counting game", "leapfrog",
    "a guessing game", "follow the leader", "ball",
)  # fmt: skip
_BUILD = ("sandcastle", "tall tower", "fort", "little house", "snowman", "boat of sticks")
_LANDMARK = ("big tree", "old fence", "swings", "slide", "pond", "bench", "gate", "flower bed")
_SPOT = (
    "under a bush", "behind a tree", "next to a big rock", "under the bench",
    "in the tall grass", "by the fence", "near the swings", "under a pile of leaves",
)  # fmt: skip
_CLOTHING = ("red hat", "blue boots", "yellow coat", "green scarf", "striped socks")
_FEEL_GOOD = ("happy", "glad", "proud", "excited", "warm inside")
_PLACE_AIR = (
    "The sun was shining, and the sky was blue.",
    "It was a warm and sunny day.",
    "Birds sang in the trees above them.",
    "A soft wind blew through the trees.",
    "The air smelled of fresh flowers.",
    "Big white clouds floated in the sky.",
)

# ---------------------------------------------------------------------------------------------
# Sentence templates.  Roles: X, Y, Z (plot participants), P (who needs help), H (the helper).
# Fields per role R: R, R_he, R_He, R_him, R_his, R_His, R_self, R_s (possessive), R_kind
# (girl/boy), R_sib (sister/brother).  Never put two name fields next to " and ".
# ---------------------------------------------------------------------------------------------

_OPENINGS = (
    "Once upon a time, there was a little {X_kind} named {X}.",
    "Once upon a time, in a {town}, there lived a {adj} {X_kind} named {X}.",
    "One day, a little {X_kind} named {X} went to the {place}.",
    "There was once a {adj} {X_kind} called {X}.",
    "{X} was a {adj} little {X_kind} who lived in a {home}.",
    "Once upon a time, a {X_kind} named {X} lived near the {place}.",
    "Long ago, in a {town}, there was a {X_kind} named {X}.",
    "There once was a {adj} {X_kind}. {X_His} name was {X}.",
    "Once there was a {X_kind} named {X} who loved the {place}.",
    "In a {town}, there was a {adj} {X_kind}. Everyone called {X_him} {X}.",
    "Once upon a time, there was a {adj} {X_kind}. {X_His} name was {X}.",
    "One {day}, a {X_kind} named {X} woke up early.",
)
_TRAITS = (
    "{X_He} loved to {act}.",
    "{X_He} liked to {act} every day.",
    "Every morning, {X} would {act} with a big smile.",
    "{X_His} favorite toy was {a_toy}.",
    "{X} had {a_toy} that {X_he} loved very much.",
    "{X_He} was always {mood} and liked to help others.",
    "{X} lived with {X_his} family in a {home}.",
    "More than anything, {X} loved to {act}.",
    "{X_He} always wore {X_his} {clothing}.",
    "{X} was very {mood}, but sometimes {X_he} was a little shy.",
)
_MEET = (
    "{X} had a friend named {Y}.",
    "{X_His} best friend was a {Y_kind} named {Y}.",
    "{X} met {Y} at the {place}.",
    "{Y} lived next door to {X}.",
    "One {day}, {Y} came to visit {X}.",
    "At the {place}, {X} saw a {Y_kind} named {Y}.",
    "{X} and {X_his} friend {Y} went to the {place}.",
    "{X} went to the {place} with {Y}.",
    "{X} went to play with {Y} at the {place}.",
    "{X} had a {Y_sib} named {Y}.",
    "A new {Y_kind} named {Y} moved in next door to {X}.",
    "{X} often played with {Y}, a {adj} {Y_kind} from school.",
    "{X_His} friend {Y} was coming over to play.",
    "One {day}, {X} walked to the {place} with {X_his} friend {Y}.",
)
_MEET_FOLLOW = (
    '"Hi, {Y}!" said {X}. "Do you want to play?"',
    '"Hello, {X}!" said {Y} with a big smile.',
    "{Y} waved at {X} and ran over.",
    "The two friends liked to {act} together.",
    "{Y} was {adj} and always made {X} laugh.",
    '{Y} smiled at {X}. "Let\'s {act}!" {Y_he} said.',
    "{X} was happy to see {Y}.",
    '"Can we {act} today?" asked {X}. "Yes!" said {Y}.',
    "{X_He} and {Y} liked to {act}.",
    "{Y} always had fun with {X}.",
)
_JOIN = (
    "Soon, {Y} came to play too.",
    "Their friend {Y} was there too.",
    "Then {Y} came running over.",
    "A {Y_kind} named {Y} was playing near the {landmark}.",
    "{X_His} {Y_sib} {Y} came along too.",
    "{Y}, a {adj} {Y_kind} from school, was already there.",
    '"Can I play too?" asked {Y}. "Of course!" said {X}.',
    "Later, {Y} joined them.",
    "{X} saw {Y} sitting alone on a bench and asked {Y_him} to join.",
    "There was also a {Y_kind} called {Y}.",
    "{Y}, who lived down the street, came to say hello.",
    '"Wait for me!" called {Y}, running to catch up.',
)
_ACTIVITY = (
    "They played {game} and laughed a lot.",
    "The friends ran around the {place} and had lots of fun.",
    "Everyone was having a good time.",
    "{X} played {game} with {Y} under a big tree.",
    "{X} showed {Y} how to {act}.",
    "{X} built a {build} with {Y}.",
    "They sang songs and clapped their hands.",
    "{X} laughed, and {Y} laughed too.",
    "They decided to {act} for a while.",
    "{Y} told {X} a funny story, and they both giggled.",
)

# Problems.  Each is a tuple of slots; each slot is a tuple of alternative templates.
_LOST = (
    (
        "Suddenly, {P} could not find {P_his} {obj}.",
        "Oh no! {P_s} {obj} was gone.",
        "{P} looked in {P_his} bag, but the {obj} was not there.",
        "After a while, {P} saw that {P_his} {obj} was missing.",
    ),
    (
        "{P} looked everywhere, but {P_he} could not find it.",
        "{P_He} looked under the bench and behind the trees.",
        "{P_He} searched and searched, but it was no use.",
    ),
    (
        '"My {obj} is lost!" cried {P}.',
        '{P} began to cry. "Where is my {obj}?" {P_he} asked.',
        "{P} felt very sad.",
        "{P} sat down and frowned.",
    ),
    (
        "{H} wanted to help.",
        '"Don\'t worry, {P}," said {H}. "I will help you."',
        "{H} saw that {P} was sad and came over.",
        '"I will find it for you, {P}!" said {H}.',
    ),
    (
        "{H} looked high and low.",
        "{H} looked {spot}.",
        "{H} searched the whole {place}.",
        "A kind dog came by and sniffed the grass, and {H} followed it.",
    ),
    (
        "At last, {H} found the {obj} {spot} and handed it to {P}.",
        "There it was, {spot}! {H} ran back and gave the {obj} to {P}.",
        "{H} found the {obj} {spot}. {H} brought the {obj} back to {P}.",
        "At last, {H} saw the {obj} {spot}. {H} picked it up and gave it to {P}.",
        "{H} found it {spot}. Then {H} passed the {obj} to {P}.",
    ),
)
_NONE = (
    (
        "{P} did not have {a_obj}.",
        "{P} looked at the {obj} and wished {P_he} had one too.",
        "{P} sat alone because {P_he} had no {obj}.",
        "{P} wanted {a_obj} too, but {P_he} did not have one.",
    ),
    (
        "{H} saw that {P} looked sad.",
        "{H} had an extra {obj} in {H_his} bag.",
        "{H} thought for a moment.",
        '"Why are you sad, {P}?" asked {H}.',
    ),
    (
        "{H} gave {H_his} {obj} to {P}.",
        "{H} offered {H_his} {obj} to {P}.",
        "{H} lent {H_his} {obj} to {P} for the day.",
        '{H} smiled and handed the {obj} to {P}. "You can have it," {H_he} said.',
        "{H} took the {obj} out of {H_his} bag and gave it to {P}.",
        '"Here, you can use mine," said {H}. {H} passed the {obj} to {P}.',
    ),
)
_STUCK = (
    (
        "Then the wind blew, and {P_s} {obj} got stuck in a tall tree.",
        "{P} threw {P_his} {obj} too high, and it landed on the roof of the shed.",
        "Oops! {P_s} {obj} got stuck on a high branch.",
    ),
    (
        "{P} jumped and jumped, but {P_he} could not reach it.",
        "{P} was too small to reach it.",
        "{P} tried to get it, but it was too high.",
    ),
    (
        "{H} had an idea.",
        '"I can help!" said {H}.',
        "{H} found a long stick.",
        "{H} went to get a ladder.",
    ),
    (
        "{H} climbed up carefully and got the {obj}.",
        "{H} used a stick to knock the {obj} down.",
        "{H} reached up and pulled the {obj} free.",
    ),
    (
        "Then {H} passed the {obj} to {P}.",
        "{H} tossed the {obj} down to {P}.",
        "{H} gave the {obj} back to {P}.",
        "{H} handed the {obj} to {P} with a smile.",
    ),
)
_HUNGRY = (
    (
        "After a while, {P} felt very hungry.",
        "{P_s} tummy began to rumble.",
        "{P} had forgotten {P_his} lunch at home.",
    ),
    (
        "{H} had {a_obj} in {H_his} bag.",
        "{H} opened {H_his} lunch box.",
        "{H} saw that {P} had nothing to eat.",
    ),
    (
        "{H} broke the {obj} in half and gave one piece to {P}.",
        "{H} handed {a_obj} to {P}.",
        "{H} offered {H_his} {obj} to {P}.",
        '"Here, take this," said {H}, and {H_he} gave the {obj} to {P}.',
        "{H} shared {H_his} {obj} with {P}.",
    ),
)
_SHOW = (
    (
        "{X} found {a_obj} {spot}.",
        "Near the {landmark}, {X} saw something shiny. It was {a_obj}!",
        "{X} bent down and picked up {a_obj}.",
    ),
    ('"Look what I found!" said {X}.', "{X} was very excited.", "{X_He} held it up high."),
    (
        "{X} showed the {obj} to {Y}.",
        "{X} showed the {obj} to {X_his} friend {Y}.",
        "{X} ran over and showed it to {Y}.",
        "{X} carefully passed the {obj} to {Y}.",
        "{X} brought the {obj} to {Y}.",
    ),
    (
        '"Wow, it is so pretty!" said {Y}.',
        "{Y} held it up to the light.",
        '"Can I keep it?" asked {Y}. "Yes, you can," said {X}.',
        "{Y} smiled and said it was the best {obj} in the world.",
    ),
)
_CATCH = (
    (
        "{X} had {a_obj}, so they played catch.",
        "They decided to play catch with {X_s} {obj}.",
        '"Let\'s play catch!" said {X}, holding up {X_his} {obj}.',
    ),
    (
        "{X} threw the {obj} to {Y}.",
        "{X} tossed the {obj} to {Y}.",
        "First, {X} threw the {obj} to {Y}.",
    ),
    (
        "{Y} caught it and threw it back to {X}.",
        "{Y} jumped up and caught it.",
        '"Good catch, {Y}!" said {X}.',
        "{Y} almost dropped it, but {Y_he} held on.",
    ),
)
_CATCH_Z = (
    "Then {Y} threw the {obj} to {Z}.",
    "{Y} passed the {obj} to {Z}, who caught it with both hands.",
    "Next, {Y} tossed the {obj} to {Z}.",
)
_CATCH_END = (
    "Everyone laughed.",
    "They played until the sun went down.",
    "Nobody dropped the {obj} even once.",
    "It was so much fun.",
)
_GIFT = (
    (
        "It was {P_s} birthday.",
        "Tomorrow was {P_s} birthday, and {H} wanted to give {P_him} something special.",
        "{P} had been sick all week, and {H} wanted to cheer {P_him} up.",
    ),
    (
        "{H} wrapped the {obj} in pretty paper.",
        "{H} picked out {a_obj} at the shop.",
        "{H} thought hard about what {P} would like.",
    ),
    (
        "{H} brought the {obj} to {P}.",
        "{H} gave the {obj} to {P}.",
        "{H} sent the {obj} to {P} with a little note.",
        "Later that day, {H} gave {a_obj} to {P}.",
        "{H} offered the {obj} to {P} with both hands.",
    ),
    (
        "{P} opened it and smiled.",
        "{P} could not stop smiling.",
        '"It is perfect!" said {P}.',
    ),
)
_SHARE = (
    (
        "{X} had a big bag of {foods}.",
        "{X_s} mom had packed lots of {foods} for {X_him}.",
    ),
    (
        "At first, {X} did not want to share.",
        "{X} wanted to keep them all for {X_self}.",
        "{X} ate one and then another.",
    ),
    (
        "Then {X} saw {Y} looking at the bag.",
        "But {Y} had nothing to eat.",
        "{Y} looked at the {foods} and said nothing.",
    ),
    (
        "{X} gave some {foods} to {Y}.",
        "{X} handed a few {foods} to {Y}.",
        "{X} offered the bag to {Y}.",
        "{X} passed the bag of {foods} to {Y}.",
    ),
    (
        "Sharing made {X} feel good inside.",
        "{Y} smiled, and {X} smiled too.",
        "The {foods} tasted even better when they shared them.",
    ),
)
_HURT = (
    (
        "{P} tripped on a rock and fell down.",
        "As {P_he} ran, {P} slipped and hurt {P_his} knee.",
        "{P} fell off the swing and scraped {P_his} arm.",
    ),
    (
        "{P_He} started to cry.",
        '"Ouch!" cried {P}.',
        "{P_His} knee hurt a lot.",
    ),
    (
        "{H} ran to help {P_him}.",
        "{H} helped {P} get up.",
        '"Are you okay, {P}?" asked {H}.',
    ),
    (
        "{H} brought a cup of water to {P}.",
        "{H} gave a bandage to {P}.",
        "{H} handed {H_his} {obj} to {P} to cheer {P_him} up.",
        "{H} lent {H_his} {obj} to {P} until {P_he} felt better.",
    ),
    (
        "Soon {P} felt better.",
        "{P} stopped crying.",
        "After a while, the pain went away.",
    ),
)
_ADULT_VISIT = (
    (
        "Later, {X} went to visit {G}.",
        "In the afternoon, {G} came over.",
        "That evening, {X} helped {G} in the kitchen.",
    ),
    (
        "{X} brought {a_obj} to {G}.",
        "{X} gave {a_obj} to {G}.",
        "{X} showed {X_his} new {obj} to {G}.",
    ),
    (
        "{G} smiled and gave {X} a big hug.",
        '"Thank you, {X}," said {G}.',
        "{G} gave a warm cookie to {X}.",
        '"How lovely!" said {G}.',
    ),
)
_THANKS = (
    '{P} smiled. "Thank you, {H}!" {P_he} said.',
    '"You are a good friend, {H}," said {P}.',
    "{P} gave {H} a big hug.",
    '"Thank you so much!" said {P}.',
    "{P} thanked {H} again and again.",
    '"You are the best, {H}!" said {P}.',
    "{P} was so happy that {P_he} jumped up and down.",
)
_REPLY = (
    '{H} smiled and said, "That is what friends are for."',
    "{H} felt {feel}.",
    "Now {P} was not sad anymore.",
    '"You\'re welcome, {P}," said {H}.',
    "{H} was glad {H_he} could help.",
    "Helping {P} made {H} feel {feel}.",
)
_ENDINGS = (
    "From that day on, the friends played together every day.",
    "{X} learned that sharing makes everyone happy.",
    "They all went home happy and tired.",
    "It was the best day ever.",
    "At the end of the day, {X} went home and told {X_his} mom all about it.",
    "The friends always remembered that day at the {place}.",
    "{P} never forgot how kind {H} had been.",
    "And they lived happily ever after.",
    "That night, {X} fell asleep with a big smile.",
    "{X} knew that helping others is a good thing to do.",
    "The next day, {X} went back to the {place} to play with {Y} again.",
    "Being kind made {X} feel good inside.",
    "From then on, {P} and {P_his} friends always helped each other.",
    "Now {P} knew that a good friend is always there to help.",
)

_PROBLEMS = ("lost", "none", "stuck", "hungry", "hurt", "gift")
_PROBLEM_OBJECTS = {
    "lost": _PORTABLE,
    "none": _SHAREABLE,
    "stuck": _STUCKABLE,
    "hungry": _FOODS,
    "hurt": _TOYS,
    "gift": _GIFTS,
}
# (slots, optional slots): an optional slot is left out 30% of the time; the others (the
# problem, the transfer) always appear.
_PROBLEM_SLOTS = {
    "lost": (_LOST, (1, 2, 4)),
    "none": (_NONE, (1,)),
    "stuck": (_STUCK, (1, 2, 3)),
    "hungry": (_HUNGRY, (1,)),
    "hurt": (_HURT, (1, 2, 4)),
    "gift": (_GIFT, (1, 3)),
}


# ---------------------------------------------------------------------------------------------
# Precomputed role fields.
# ---------------------------------------------------------------------------------------------

_ROLES = ("X", "Y", "Z", "P", "H", "G")


def _role_fields(name: str, gender: str, role: str) -> dict[str, str]:
    f = gender == "f"
    he, him, his, self_ = ("she", "her", "her", "herself") if f else ("he", "him", "his", "himself")
    return {
        role: name,
        role + "_he": he,
        role + "_He": he.capitalize(),
        role + "_him": him,
        role + "_his": his,
        role + "_His": his.capitalize(),
        role + "_self": self_,
        role + "_s": name + "'s",
        role + "_kind": "girl" if f else "boy",
        role + "_sib": "sister" if f else "brother",
    }


_FIELDS: dict[str, dict[str, dict[str, str]]] = {
    name: {r: _role_fields(name, g, r) for r in _ROLES}
    for name, g in list(GENDER.items()) + list(_ADULTS)
}
_ADULT_GENDER = dict(_ADULTS)

# ---------------------------------------------------------------------------------------------
# Forbidden (IOI-like) spans.
# ---------------------------------------------------------------------------------------------

_NAME_SET = frozenset(FIRST_NAMES)
_CAP = r"[A-Z][A-Za-z]*"
_AND_RE = re.compile(rf"\b({_CAP})(?= and ({_CAP})\b)")
_START_RE = re.compile(rf"\b(?:When|After|While|Then,) ({_CAP})\b")


def forbidden_spans(text: str) -> list[str]:
    """Every IOI-like span in ``text``: "NAME and NAME" (case-sensitive, overlapping matches
    included) and "When NAME", "After NAME", "While NAME" or "Then, NAME" (anywhere, not only
    at a sentence start).  Names are those of FIRST_NAMES (all single words)."""
    out = []
    for m in _AND_RE.finditer(text):
        a, b = m.group(1), m.group(2)
        if a in _NAME_SET and b in _NAME_SET:
            out.append(f"{a} and {b}")
    for m in _START_RE.finditer(text):
        if m.group(1) in _NAME_SET:
            out.append(m.group(0))
    return out


# ---------------------------------------------------------------------------------------------
# Generator.
# ---------------------------------------------------------------------------------------------


class StoryGenerator:
    """Deterministic TinyStories-like story generator (``random.Random(seed)``).

    After each :meth:`story`, ``last_cast`` holds ``(name, gender)`` for every character of that
    story: the named children first, then an unnamed grown-up (Mom, Dad, Grandma, Grandpa) if
    one took part."""

    min_words = 80
    max_words = 300

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.last_cast: tuple[tuple[str, str], ...] = ()

    # -- helpers ------------------------------------------------------------------------------

    def _name(self, taken: set[str]) -> str:
        r = self._rng
        while True:
            pool = LONG_NAMES if r.random() < 0.3 else SHORT_NAMES
            name = pool[int(r.random() * len(pool))]
            if name not in taken:
                taken.add(name)
                return name

    def _bind(self, ctx: dict[str, str], **roles: str) -> None:
        for role, name in roles.items():
            ctx.update(_FIELDS[name][role])

    def _slots(self, slots, optional, ctx: dict[str, str], out: list[str]) -> None:
        """One template from each slot; an optional slot is left out 30% of the time."""
        r = self._rng
        for i, alts in enumerate(slots):
            if i in optional and r.random() < 0.3:
                continue
            out.append(alts[int(r.random() * len(alts))].format_map(ctx))

    # -- story --------------------------------------------------------------------------------

    def story(self) -> str:
        """One story, redrawn (up to 20 times) until its word count is in the length window."""
        for _ in range(20):
            text = self._story()
            n = text.count(" ") + text.count("\n") + 1
            if self.min_words <= n <= self.max_words:
                return text
        return text  # pragma: no cover - the length window is wide enough in practice

    def _story(self) -> str:
        r = self._rng
        choice = r.choice
        taken: set[str] = set()
        n_named = choice((2, 2, 3, 3, 3, 4, 4))
        cast = [self._name(taken) for _ in range(n_named)]
        adult = choice(_ADULTS)[0] if r.random() < 0.3 else None
        place = choice(PLACES)
        ctx: dict[str, str] = {
            "place": place,
            "town": choice(_TOWN),
            "home": choice(_HOME),
            "adj": choice(_ADJ),
            "day": choice(_DAY),
            "act": choice(_ACT),
            "mood": choice(_MOOD),
            "clothing": choice(_CLOTHING),
            "a_toy": _ARTICLE[choice(_TOYS)],
            "game": choice(_GAME),
            "build": choice(_BUILD),
            "landmark": choice(_LANDMARK),
            "spot": choice(_SPOT),
            "feel": choice(_FEEL_GOOD),
            "foods": choice(_food_plural),
        }
        a, b = cast[0], cast[1]

        # Paragraph 1: the main character, a friend, maybe more friends.
        p1: list[str] = []
        self._bind(ctx, X=a, Y=b)
        p1.append(choice(_OPENINGS).format_map(ctx))
        for t in r.sample(_TRAITS, choice((1, 1, 2))):
            p1.append(t.format_map(ctx))
        p1.append(choice(_MEET).format_map(ctx))
        if r.random() < 0.7:
            p1.append(choice(_MEET_FOLLOW).format_map(ctx))
        late = cast[3] if n_named == 4 and r.random() < 0.5 else None
        for c in cast[2:]:
            if c == late:
                continue
            ctx["adj"] = choice(_ADJ)
            self._bind(ctx, X=choice(cast[: cast.index(c)]), Y=c)
            p1.append(choice(_JOIN).format_map(ctx))

        # Paragraph 2: play, then a problem solved by a helper (usually with a transfer).
        p2: list[str] = []
        present = [c for c in cast if c != late]
        x, y = r.sample(present, 2)
        if r.random() < 0.6:
            ctx["game"] = choice(_GAME)
            self._bind(ctx, X=x, Y=y)
            p2.append(choice(_ACTIVITY).format_map(ctx))
        if r.random() < 0.5:
            p2.append(choice(_PLACE_AIR))
        kind = choice(_PROBLEMS)
        victim, helper = r.sample(present, 2)
        if adult is not None and kind in ("hungry", "lost") and r.random() < 0.25:
            helper = adult  # a grown-up helps
        ctx["obj"] = obj = choice(_PROBLEM_OBJECTS[kind])
        ctx["a_obj"] = _ARTICLE[obj]
        ctx["spot"] = choice(_SPOT)
        self._bind(ctx, P=victim, H=helper)
        self._slots(*_PROBLEM_SLOTS[kind], ctx, p2)
        p2.append(choice(_THANKS).format_map(ctx))
        if r.random() < 0.7:
            p2.append(choice(_REPLY).format_map(ctx))

        # Paragraph 3 (optional): a second, lighter episode.
        p3: list[str] = []
        if late is not None:
            present.append(late)
            self._bind(ctx, X=choice(present[:-1]), Y=late)
            p3.append(choice(_JOIN).format_map(ctx))
        roll = r.random()
        if roll < 0.35 or late is not None:
            x, y = r.sample(present, 2)
            ctx["obj"] = obj = choice(_THROWABLE)
            ctx["a_obj"] = _ARTICLE[obj]
            self._bind(ctx, X=x, Y=y)
            self._slots(_CATCH, (), ctx, p3)
            if len(present) > 2:
                z = choice([c for c in present if c != x and c != y])
                self._bind(ctx, Z=z)
                p3.append(choice(_CATCH_Z).format_map(ctx))
            p3.append(choice(_CATCH_END).format_map(ctx))
        elif roll < 0.6:
            x, y = r.sample(present, 2)
            ctx["obj"] = obj = choice(_FINDS)
            ctx["a_obj"] = _ARTICLE[obj]
            self._bind(ctx, X=x, Y=y)
            self._slots(_SHOW, (1, 3), ctx, p3)
        elif roll < 0.75:
            x, y = r.sample(present, 2)
            self._bind(ctx, X=x, Y=y)
            self._slots(_SHARE, (1, 2, 4), ctx, p3)
        if adult is not None and helper != adult:
            ctx["obj"] = obj = choice(_GIFTS)
            ctx["a_obj"] = _ARTICLE[obj]
            self._bind(ctx, X=choice(present), G=adult)
            self._slots(_ADULT_VISIT, (), ctx, p3)

        # Last paragraph: an ending or a lesson.
        self._bind(ctx, X=a, Y=b)
        ending = [t.format_map(ctx) for t in r.sample(_ENDINGS, choice((1, 1, 2)))]

        paragraphs = [p1, p2]
        if p3:
            paragraphs.append(p3)
        if r.random() < 0.5:
            paragraphs[-1].extend(ending)
        else:
            paragraphs.append(ending)
        self.last_cast = tuple((c, GENDER[c]) for c in cast) + (
            ((adult, _ADULT_GENDER[adult]),) if adult is not None else ()
        )
        return "\n".join(" ".join(p) for p in paragraphs)


def generate_stories(n: int | None = None, seed: int = 0) -> Iterator[str]:
    """n stories (None: unbounded), deterministic for a seed."""
    gen = StoryGenerator(seed)
    i = 0
    while n is None or i < n:
        yield gen.story()
        i += 1
