"""The kinds of vector bank a vector store holds, named once.

The vector code (bank.py, compose.py, card.py), the shared resources and the CAA methods all read
this table, so a new kind of per-user vector is one row here plus the code that composes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from steer_away.errors import InputError

POPULATION, DISLIKE, BT = "population", "dislike", "bt"
COMPOSED_VECTOR = "composed"  # the `kind` of a vector made by arithmetic on others
IMPORTED_VECTOR = "imported-gguf"  # the `kind` of a vector read from a llama.cpp control vector


@dataclass(frozen=True)
class BankKind:
    """One kind of bank: everyone's vector at the store's root, or vectors per user in `<name>/users/`."""

    name: str
    per_user: bool
    summary: str


BANK_KINDS: dict[str, BankKind] = {kind.name: kind for kind in (
    BankKind(POPULATION, False, "the population mean-difference vector"),
    BankKind(DISLIKE, True, "dislike-weighted per-user vectors"),
    BankKind(BT, True, "Bradley–Terry ideal-point per-user vectors"),
)}

# The per-user kinds, composed from the population's pair activations (`steer-away vectors compose --mode`).
COMPOSED_KINDS = tuple(name for name, kind in BANK_KINDS.items() if kind.per_user)

# Vectors any bank may hold whatever its kind: made by arithmetic, or imported.
FOREIGN_VECTOR_KINDS = (COMPOSED_VECTOR, IMPORTED_VECTOR)


def bank_kind(name: str) -> BankKind:
    try:
        return BANK_KINDS[name]
    except KeyError:
        raise InputError(f"unknown vector bank kind {name!r} (have {', '.join(BANK_KINDS)})") from None
