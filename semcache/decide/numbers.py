"""What the numbers guard reads: numbers, dates, versions, ordinals, months, weekdays, Roman numerals.

:func:`numbers_in` gives a text's numbers in one spelling each ("1,000" = "1000", "second" =
"2nd", "II" = "2"); :mod:`semcache.decide.guards` refuses a pair whose sets differ, after
:func:`without_a_lone_one` (a spelled "one" is often no count). The diff rule's atoms
(:mod:`semcache.decide.atoms`) forgive digits the other text spells with these words.
"""

from __future__ import annotations

import re

from semcache.textcache import per_text

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100",
    "thousand": "1000", "million": "1000000", "billion": "1000000000",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
    "sixth": "6th", "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th",
    "eleventh": "11th", "twelfth": "12th", "twentieth": "20th", "hundredth": "100th",
    "january": "m01", "february": "m02", "march": "m03", "april": "m04", "june": "m06",
    "july": "m07", "august": "m08", "september": "m09", "october": "m10", "november": "m11",
    "december": "m12", "jan": "m01", "feb": "m02", "mar": "m03", "apr": "m04", "jun": "m06",
    "jul": "m07", "aug": "m08", "sep": "m09", "sept": "m09", "oct": "m10", "nov": "m11", "dec": "m12",
    "monday": "d1", "tuesday": "d2", "wednesday": "d3", "thursday": "d4", "friday": "d5",
    "saturday": "d6", "sunday": "d7", "yesterday": "rel-1", "today": "rel0", "tomorrow": "rel+1",
}
# Versions, dates, decimals, ordinals and plain integers, with "1,000" read as 1000.
_NUMBER_RE = re.compile(r"v?\d+(?:[.,:/-]\d+)*(?:st|nd|rd|th)?", re.IGNORECASE)
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("’", "'"))


@per_text
def numbers_in(text: str) -> frozenset[str]:
    """Numbers, dates, versions, ordinals, months, weekdays and Roman numerals, normalised."""
    found = set()
    for match in _NUMBER_RE.findall(text):
        token = match.lower().lstrip("v")
        if re.fullmatch(r"\d{1,3}(,\d{3})+", token):
            token = token.replace(",", "")
        found.add(token)
    for word in _words(text):
        if word in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[word])
    found.update(_roman_numbers(text))
    return frozenset(found)


# Roman numerals made of I, V and X, two letters or more, in capitals ("World War II", "Henry
# VIII", "Part IV"); after "war" any case and one letter too ("world war i"). Not L, C, D or M:
# those spell acronyms ("DC", "CD", "CLI", "XL"), and neither a lone capital I (the pronoun).
_ROMAN_RE = re.compile(r"\b(?:X{0,3}(?:IX|IV|VI{0,3}|I{2,3})|X{1,3}(?:IX|IV|V?I{0,3})"
                       r"|(?i:(?<=\bwar )(?P<war>x{0,3}(?:ix|iv|v?i{0,3}))))\b")
_ROMAN_VALUE = {"i": 1, "v": 5, "x": 10}
_ROMAN_HINT_RE = re.compile(r"[IVX]|(?i:\bwar\b)")


def _roman_value(numeral: str) -> int:
    values = [_ROMAN_VALUE[c] for c in numeral.lower()]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def _roman_numbers(text: str) -> set[str]:
    """Roman numerals in ``text`` (see :data:`_ROMAN_RE`), as decimal numbers: "II" and "2" agree."""
    if not _ROMAN_HINT_RE.search(text):  # most texts: no capital I, V or X, no "war"
        return set()
    found = {m.group(0) for m in _ROMAN_RE.finditer(text) if m.group("war") or len(m.group(0)) >= 2}
    return {str(_roman_value(numeral)) for numeral in found}


@per_text
def _one_only_spelled(text: str) -> bool:
    """Whether ``text``'s number 1 comes from a word ("one", or a Roman "war I"), never from a digit."""
    return not any(m.lower().lstrip("v") == "1" for m in _NUMBER_RE.findall(text))


# Counts the numbers guard cannot read as a number: against these "one" is a count.
_QUANTITIES = frozenset({"multiple", "several", "few", "couple", "dozen", "dozens", "both", "pair",
                         "pairs", "twice", "double", "triple", "many", "various", "all", "every"})


def without_a_lone_one(numbers: frozenset[str], other: frozenset[str], text: str, other_text: str) -> frozenset[str]:
    """``numbers`` without a 1 spelled "one" when the other text states no number at all: "one"
    is as often a pronoun or a determiner ("from one computer to another", "the one I give") as
    a count, and then nothing contradicts it. "one" / "two", "one" / "2" and "add one and 3" /
    "add 3" still differ, and so do "one" / "multiple doses" (:data:`_QUANTITIES`); "1" in digits
    always counts. (The diff rule's atoms never read spelled numbers as atoms, for the same reason.)"""
    if (not other and "1" in numbers and _one_only_spelled(text)
            and _QUANTITIES.isdisjoint(_words(other_text))):
        return numbers - {"1"}
    return numbers


def spelled_on_one_side_only(a: str, b: str) -> bool:
    """One text states no number at all; the other states its numbers as words only."""
    na, nb = numbers_in(a), numbers_in(b)
    if na and nb:
        return False
    stated = a if na else b
    return bool(na or nb) and not _NUMBER_RE.search(stated)
