"""Words of a text: the unit the attacks change, count and mark.

A text is cut into pieces (words, runs of white space, single other characters) that join back
to the text exactly. Words are the pieces made of letters (with an inner apostrophe); only they
are counted and changed, so punctuation and spacing survive an attack untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Words", "STOPWORDS", "mark_changes"]

_PIECE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\s+|[^A-Za-z\s]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")

_STOPWORD_TEXT = """a about above across after afterwards again against ain all almost alone along already
    also     although am among amongst an and another any anyhow anyone anything anyway anywhere are aren
    aren't around as at be became because become becomes becoming been before beforehand behind
    being below beside besides between beyond both but by can cannot could couldn couldn't d didn
    didn't do does doesn doesn't doing don don't down due during either else elsewhere empty enough
    even ever everyone everything everywhere except first for former formerly from hadn hadn't hasn
    hasn't haven haven't he hence her here hereafter hereby herein hereupon hers herself him himself
    his how however hundred i if in indeed into is isn isn't it it's its itself just latter latterly
    least ll may me meanwhile mightn mightn't mine more moreover most mostly must mustn mustn't my
    myself namely needn needn't neither never nevertheless next no nobody none noone nor not nothing
    now nowhere o of off on once one only onto or other others otherwise our ours ourselves out over
    per please s same shan shan't she she's should've shouldn shouldn't somehow something sometime
    somewhere such t than that that'll the their theirs them themselves then thence there thereafter
    thereby therefore therein thereupon these they this those through throughout thru thus to too
    toward towards under unless until up upon used ve was wasn wasn't we were weren weren't what
    whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever whether
    which while whither who whoever whole whom whose why with within without won won't would wouldn
    wouldn't y yet you you'd you'll you're you've your yours yourself yourselves"""
#: English function words that the word-level attacks never replace (when ``keep_stopwords``).
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Words:
    """A text cut into pieces; ``slots`` are the indices of the pieces that are words."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]

    @staticmethod
    def of(text: str) -> Words:
        pieces = tuple(_PIECE.findall(text))
        if "".join(pieces) != text:  # the pattern covers every character; keep the guarantee loud
            raise AssertionError("word segmentation lost characters")
        return Words(pieces, tuple(i for i, p in enumerate(pieces) if _WORD.fullmatch(p)))

    def __len__(self) -> int:
        return len(self.slots)

    def word(self, k: int) -> str:
        """The ``k``-th word."""
        return self.pieces[self.slots[k]]

    def text(self) -> str:
        return "".join(self.pieces)

    def replace(self, k: int, new: str) -> Words:
        """The text with its ``k``-th word replaced by ``new`` (an empty ``new`` deletes it)."""
        pieces = list(self.pieces)
        pieces[self.slots[k]] = new
        return Words(tuple(pieces), self.slots)


def mark_changes(original: Words, adversarial: Words, changed: tuple[int, ...]) -> str:
    """The adversarial text with each changed word written ``[[old->new]]``."""
    pieces = list(adversarial.pieces)
    for k in changed:
        slot = adversarial.slots[k]
        pieces[slot] = f"[[{original.pieces[slot]}->{adversarial.pieces[slot]}]]"
    return "".join(pieces)
