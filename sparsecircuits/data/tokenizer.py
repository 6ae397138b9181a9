"""A fixed character-level vocabulary for Python source: PAD, UNK, tab, newline, printable ASCII."""

from collections.abc import Iterable

import numpy as np

PAD_ID = 0
UNK_ID = 1
UNK_TEXT = "\ufffd"
SYMBOLS = "\t\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
    """Character tokenizer: id 0 is PAD, id 1 is UNK (any character outside the vocabulary),
    then tab, newline and the printable ASCII characters 32..126, in that order (99 ids)."""

    def __init__(self) -> None:
        self._id_of = {ch: i + 2 for i, ch in enumerate(SYMBOLS)}
        self._symbols = ["", UNK_TEXT, *SYMBOLS]
        # Lookup table over ASCII code points; everything else maps to UNK.
        self._ascii_table = np.full(128, UNK_ID, dtype=np.uint8)
        for ch, i in self._id_of.items():
            self._ascii_table[ord(ch)] = i

    @property
    def vocab_size(self) -> int:
        """Number of ids, PAD and UNK included."""
        return len(self._symbols)

    @property
    def pad_id(self) -> int:
        """The id used to pad task prompts on the left."""
        return PAD_ID

    @property
    def unk_id(self) -> int:
        """The id of every character outside the vocabulary."""
        return UNK_ID

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text`."""
        return [self._id_of.get(ch, UNK_ID) for ch in text]

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of the characters of `text` as a uint8 array (vectorised; for whole files)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._ascii_table[np.minimum(codes, 127)]
        ids[codes > 127] = UNK_ID
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids; PAD decodes to nothing, UNK to U+FFFD."""
        return "".join(self._symbols[int(i)] for i in ids)


TOKENIZER = CharTokenizer()
