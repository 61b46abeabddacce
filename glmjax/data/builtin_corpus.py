"""The built-in offline corpus: English-like documents generated from a fixed seed.

No text is downloaded or copied: documents are written by templates over small hand-made word
lists, driven by a 64-bit counter hash (splitmix64), so document i is the same on every machine
and Python version, and any document can be made without making the others (prepare splits the
corpus into pieces). A fixed "world" of towns and people gives facts that repeat across documents
(where a person was born, what a town sells), and each document restates its own facts (ages,
sums, counts, summaries), so a tiny model has something to learn and to copy into blanks.
"""
from __future__ import annotations

import functools
import types
from typing import Iterator, Mapping

_MASK64 = (1 << 64) - 1
_SEED = 0x61C8864680B583EB

_SYLLABLES = ("an", "bel", "cor", "dan", "el", "fen", "gar", "hal", "is", "jor", "kel", "lin",
              "mar", "nor", "ol", "pel", "quin", "ros", "sel", "tor", "ul", "ven", "wil", "yar",
              "zan", "bri", "cal", "dor", "ed", "fal", "gil", "har", "ith", "lor", "mel", "ner")
_TOWN_ENDS = ("ford", "by", "ton", "wick", "mere", "dale", "port", "ham", "field", "stead",
              "brook", "holm")
_REGIONS = ("the northern hills", "the southern plains", "the coast lands", "the western marsh",
            "the central valley", "the high moor", "the lake country", "the river delta")
_FEATURES = ("river", "lake", "forest", "harbour", "bridge", "mill", "old road", "marsh")
_PRODUCTS = ("wool", "cheese", "apples", "salt", "rope", "pottery", "honey", "timber", "glass",
             "linen", "iron nails", "barley")
_BUILDINGS = ("stone bridge", "clock tower", "market hall", "library", "lighthouse", "chapel",
              "windmill", "school")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_JOBS = ("baker", "potter", "weaver", "carpenter", "teacher", "fisher", "smith", "farmer",
         "doctor", "miller", "sailor", "painter")
_SKILLS = ("read", "swim", "sing", "draw", "count", "sail", "cook", "carve wood", "play the flute")
_RELATIVES = ("a parent", "an aunt", "an uncle", "an old neighbour", "a grandmother", "a teacher")
_ANIMALS = ("sheep", "goats", "ducks", "horses", "cows", "geese", "hens", "pigs")
_FRUITS = ("apples", "pears", "plums", "lemons", "oranges", "peaches", "melons", "cherries")
_COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "grey")
_WEATHER = ("cold and wet", "warm and dry", "windy", "foggy", "mild", "hot", "snowy", "rainy")
_ADJECTIVES = ("kind", "careful", "patient", "clever", "cheerful", "quiet", "brave", "honest")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
            "eighteen", "nineteen", "twenty")
_NUM_TOWNS = 300
_NUM_PEOPLE = 2000


class _Rng:
  """splitmix64: tiny, fast enough, and its stream never changes with library versions."""

  def __init__(self, *keys: int):
    state = _SEED
    for key in keys:
      state = self._mix((state ^ key) & _MASK64)
    self.state = state

  @staticmethod
  def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)

  def below(self, n: int) -> int:
    self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
    return self._mix(self.state) % n

  def pick(self, options):
    return options[self.below(len(options))]

  def between(self, low: int, high: int) -> int:
    return low + self.below(high - low + 1)


def _word(rng: _Rng, low: int, high: int) -> str:
  return "".join(rng.pick(_SYLLABLES) for _ in range(rng.between(low, high))).capitalize()


# Towns and people are the fixed world's: 300 and 2000 of them, drawn ~35000 times by 4000
# documents. Each is made once per process (two thirds of the corpus's time otherwise), as a
# read-only mapping, since every later document shares it.
@functools.cache
def _town(index: int) -> Mapping:
  rng = _Rng(1, index)
  return types.MappingProxyType(dict(
      name=_word(rng, 1, 2) + rng.pick(_TOWN_ENDS), region=rng.pick(_REGIONS),
      feature=rng.pick(_FEATURES), product=rng.pick(_PRODUCTS), building=rng.pick(_BUILDINGS),
      day=rng.pick(_DAYS), people=rng.between(3, 90) * 100, winter=rng.pick(_WEATHER)))


@functools.cache
def _person(index: int) -> Mapping:
  rng = _Rng(2, index)
  born = rng.between(1700, 1950)
  return types.MappingProxyType(dict(
      first=_word(rng, 2, 3), family=_word(rng, 2, 3), she=rng.pick(("She", "He")),
      town=_town(rng.below(_NUM_TOWNS)), born=born, died=born + rng.between(40, 95),
      job=rng.pick(_JOBS), skill=rng.pick(_SKILLS), teacher=rng.pick(_RELATIVES),
      adjective=rng.pick(_ADJECTIVES), colour=rng.pick(_COLOURS)))


def _town_text(rng: _Rng) -> str:
  t = _town(rng.below(_NUM_TOWNS))
  return (f"{t['name']} is a town in {t['region']}, by the {t['feature']}. About {t['people']} "
          f"people live there. {t['name']} is known for its {t['product']} and its "
          f"{t['building']}. Every {t['day']}, traders bring {t['product']} to the market. "
          f"In winter the weather in {t['name']} is {t['winter']}.\n"
          f"In short, {t['name']} is the {t['product']} town of {t['region']}.")


def _life_text(rng: _Rng) -> str:
  p = _person(rng.below(_NUM_PEOPLE))
  name, town, they = f"{p['first']} {p['family']}", p["town"], p["she"]
  partner = _person(rng.below(_NUM_PEOPLE))
  married = p["born"] + rng.between(18, 35)
  children = rng.between(0, 6)
  return (f"{name} was born in {town['name']} in {p['born']}. {they} learned to {p['skill']} "
          f"from {p['teacher']}, and later worked as a {p['job']}. In {married}, {p['first']} "
          f"married {partner['first']} {partner['family']}; they had "
          f"{_NUMBERS[children] if children else 'no'} children. {they} liked the colour "
          f"{p['colour']}. {name} died in {p['died']}, at the "
          f"age of {p['died'] - p['born']}.\n{name} is remembered as a {p['adjective']} "
          f"{p['job']} from {town['name']}.")


def _counting_text(rng: _Rng) -> str:
  p = _person(rng.below(_NUM_PEOPLE))
  animals, total = rng.pick(_ANIMALS), rng.between(3, 20)
  start = rng.below(len(_MONTHS))
  months = ", ".join(_MONTHS[(start + i) % 12] for i in range(rng.between(3, 6)))
  return (f"{p['first']} counted the {animals} in the field: "
          f"{', '.join(_NUMBERS[1:total + 1])}. There were {_NUMBERS[total]} {animals} in all.\n"
          f"{p['she']} visited them in {months}.")


def _sums_text(rng: _Rng) -> str:
  p = _person(rng.below(_NUM_PEOPLE))
  fruit, lines = rng.pick(_FRUITS), []
  for _ in range(rng.between(2, 5)):
    a, b = rng.between(0, 50), rng.between(0, 50)
    lines.append(f"{a} plus {b} is {a + b}, and {a + b} minus {b} is {a}.")
  have, more = rng.between(1, 9), rng.between(1, 9)
  lines.append(f"{p['first']} had {_NUMBERS[have]} {fruit} and bought {_NUMBERS[more]} more, "
               f"so {p['she'].lower()} had {_NUMBERS[have + more]} {fruit}.")
  return "\n".join(lines)


def _questions_text(rng: _Rng) -> str:
  p = _person(rng.below(_NUM_PEOPLE))
  name, town = f"{p['first']} {p['family']}", p["town"]
  pairs = [(f"Where was {name} born?", f"{name} was born in {town['name']}."),
           (f"What did {p['first']} do?", f"{p['first']} was a {p['job']}."),
           (f"What is {town['name']} known for?", f"{town['name']} is known for its "
                                                  f"{town['product']}."),
           (f"When is market day in {town['name']}?", f"Market day is {town['day']}.")]
  first = rng.below(len(pairs))
  chosen = pairs[first:] + pairs[:first]
  return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in chosen[:rng.between(2, 4)])


_KINDS = (_town_text, _life_text, _counting_text, _sums_text, _questions_text)


def document(index: int) -> str:
  """Document `index` of the corpus: a few paragraphs of mixed kinds."""
  rng = _Rng(3, index)
  paragraphs = [rng.pick(_KINDS)(rng) for _ in range(rng.between(2, 5))]
  return "\n\n".join(paragraphs)


def documents(start: int, stop: int) -> Iterator[str]:
  return (document(i) for i in range(start, stop))
