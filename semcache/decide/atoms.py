"""Atoms: tokens whose exact value decides the answer, and that an embedding cannot see.

MiniLM's WordPiece tokenizer turns any word over 100 characters into one
unknown token, splits hashes and base64 into meaningless pieces, and barely
moves the vector when one digit of a number or one character of an id
changes. So the diff rule (:mod:`semcache.decide.diffrule`) requires the *atoms* of
the cached query and the new one to agree as multisets:

* URLs (``scheme://...``) and e-mail addresses, verbatim;
* UUIDs, lower-cased;
* file paths (``/etc/x``, ``~/a``, ``./a``, ``C:\\a``, ``dir/file.ext``), verbatim;
* long tokens (over ``LONG_TOKEN`` characters with a digit or an unbroken
  run of letters that long: DNA, base64, hashes, long words), verbatim;
  ``improvement/clarification`` is two words the embedder reads, not an atom;
* long identifiers (``IDENT_MIN`` characters or more with ``_``, ``.`` or a
  camelCase hump), verbatim;
* words mixing letters and digits (``user42``, ``sha1``, ``v2``, hex
  hashes like ``3f9a2c1``), lower-cased;
* symbols (Unicode category So: emoji, pictographs), each one: the
  embedder reads most of them as one unknown token;
* numbers in any form, by value where the form is unambiguous: ``1,000`` =
  ``1_000`` = ``1000`` = ``1e3``, ``0x10`` = ``0o20`` = ``0b10000`` = ``16``,
  ``+5`` = ``5``, ``5%`` = ``5``; decimals, dates, versions, times and
  leading zeros are kept as written (``3.10`` is not ``3.1``); a number
  or an ordinal spelled out on the other side (``3`` / ``three``, ``2nd`` /
  ``second``) agrees.

Only whitespace-separated chunks that contain a digit or one of ``:/@\\_``,
a camelCase hump, or are long are looked at, so a page of prose costs one
regex scan. Input is bounded by the caller (:data:`semcache.decide.diffrule.MAX_COMPARE_CHARS`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from decimal import Decimal, InvalidOperation

from semcache.decide.numbers import _NUMBER_WORDS, _WORD_RE, _roman_numbers
from semcache.textcache import per_text

LONG_TOKEN = 20
"""A chunk longer than this is an atom whatever it is made of (the embedder splits it into noise)."""
IDENT_MIN = 12
"""Identifiers (snake_case, camelCase, dotted.names) this long or longer are atoms."""

# Chunks worth classifying: anything with a digit, a URL/path/e-mail/identifier
# character, a camelCase hump, or simply long.
_CANDIDATE_RE = re.compile(r"(?<!\S)(?:\S*(?:\d|[:/@\\_]|[a-z][A-Z])\S*|\S{%d,})" % (LONG_TOKEN + 1))
_STRIP = "([{<\"'`$€£¥«“‘)]}>\"'`.,;:!?»”’%*"
_URL_RE = re.compile(r"[a-zA-Z][\w+.-]*://\S+")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PATH_RE = re.compile(r"(?:~|\.{1,2})?/[^\s/]+(?:/[^\s/]*)*|[A-Za-z]:\\\S*|[\w.-]+(?:/[\w.-]+)*/[\w-]+\.\w{1,8}")
_IDENT_RE = re.compile(r"[A-Za-z_][\w]*(?:_\w+|[a-z][A-Z]\w*|\.[A-Za-z_]\w*)+")
# A number not glued to letters (sign only when not after a word character),
# else a word that mixes letters and digits. The number must end where its digits
# do: "12th" is one word, not 1 and "2th".
_NUMBER_OR_WORD_RE = re.compile(
    r"(?P<num>(?:(?<!\w)[-+])?(?<![^\W\d_])"
    r"(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|\d+(?:[.,:/_-]\d+)*(?:[eE][-+]?\d+)?)(?![^\W_]))"
    r"|(?P<word>\w*\d\w*)"
)
_NUMBER_RE = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|\d+(?:[.,_]\d+)*(?:[eE][-+]?\d+)?)")
_LONG_RUN_RE = re.compile(r"[^\W_]{%d,}" % (LONG_TOKEN + 1))
_GROUPED_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:_\d{3})+")
_SCI_RE = re.compile(r"\d+(?:\.\d+)?[eE][-+]?\d+")


def canonical_number(text: str) -> str:
    """One spelling per value for the unambiguous forms; everything else as written."""
    sign = "-" if text.startswith("-") else ""
    body = text.lstrip("+-")
    lowered = body.lower()
    if lowered.startswith(("0x", "0o", "0b")):
        return sign + str(int(lowered, 0))
    if _GROUPED_RE.fullmatch(body):
        body = body.replace(",", "").replace("_", "")
        if "." not in body:
            return sign + str(int(body))
        return sign + body
    if _SCI_RE.fullmatch(body):
        try:
            value = Decimal(body)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            return sign + body
        if value == value.to_integral_value() and abs(value) < Decimal(10) ** 30:
            return sign + str(int(value))
        return sign + format(value.normalize(), "f")
    if sign and body.strip("0") == "":
        return body  # -0 is 0
    return sign + body


def _classify(chunk: str, out: Counter) -> None:
    chunk = chunk.strip(_STRIP)
    if not chunk:
        return
    if "://" in chunk and _URL_RE.fullmatch(chunk):
        out["url:" + chunk.rstrip("/")] += 1
    elif "@" in chunk and _EMAIL_RE.fullmatch(chunk):
        out["email:" + chunk.lower()] += 1
    elif "-" in chunk and _UUID_RE.fullmatch(chunk):
        out["uuid:" + chunk.lower()] += 1
    elif ("/" in chunk or "\\" in chunk) and _PATH_RE.fullmatch(chunk):
        out["path:" + chunk] += 1
    elif _NUMBER_RE.fullmatch(chunk):
        out["num:" + canonical_number(chunk)] += 1
    elif len(chunk) > LONG_TOKEN and (_LONG_RUN_RE.search(chunk) or any(c.isdigit() for c in chunk)):
        out["long:" + chunk] += 1
    elif len(chunk) >= IDENT_MIN and _IDENT_RE.fullmatch(chunk):
        out["ident:" + chunk] += 1
    else:
        for m in _NUMBER_OR_WORD_RE.finditer(chunk):
            if m.group("num"):
                out["num:" + canonical_number(m.group("num"))] += 1
            else:
                out["word:" + m.group("word").lower()] += 1


@per_text
def atoms_in(text: str) -> tuple[tuple[str, int], ...]:
    """The atoms of ``text`` as a sorted multiset ``((kind:value, count), ...)``."""
    found: Counter = Counter()
    for chunk in _CANDIDATE_RE.findall(text):
        _classify(chunk, found)
    if not text.isascii():
        for ch, n in Counter(text).items():
            if not ch.isascii() and unicodedata.category(ch) == "So":
                found["sym:" + ch] += n
    return tuple(sorted(found.items()))


_ORDINAL_RE = re.compile(r"\d+(?:st|nd|rd|th)")


def _spelled_numbers(text: str) -> Counter:
    """Numbers written as words ("three", "twenty") or Roman numerals ("II"), as ``num:`` atoms,
    and ordinals ("second") as the ``word:`` atom their digit form makes ("2nd")."""
    spelled = [_NUMBER_WORDS[w] for w in _WORD_RE.findall(text.lower()) if w in _NUMBER_WORDS]
    spelled += _roman_numbers(text)  # "World War II" / "world war 2"
    return Counter(("word:" if _ORDINAL_RE.fullmatch(v) else "num:") + v for v in spelled)


def _numeric(atoms: Counter) -> bool:
    return any(k.startswith("num:") or (k.startswith("word:") and _ORDINAL_RE.fullmatch(k[5:])) for k in atoms)


def atom_difference(a: str, b: str) -> list[str]:
    """Atoms whose counts differ between ``a`` and ``b`` (empty when they agree).

    A number or an ordinal in digits on one side is forgiven when the other side
    spells it ("World War 3" / "World War three", "2nd" / "second"); spelled
    numbers are not atoms themselves, since "one" is as often a pronoun.
    """
    ta, tb = atoms_in(a), atoms_in(b)
    if ta == tb:
        return []
    ca, cb = Counter(dict(ta)), Counter(dict(tb))
    only_a, only_b = ca - cb, cb - ca
    if _numeric(only_a):
        only_a -= _spelled_numbers(b)
    if _numeric(only_b):
        only_b -= _spelled_numbers(a)
    return sorted((only_a + only_b).keys())
