"""Synthetic preference pairs for steering tests (hand-written, not PRISM text)."""

from steer_away.data.pairs import PreferencePair


def make_pairs(n: int = 6, users: tuple[str, ...] = ("u1", "u2")) -> list[PreferencePair]:
    chosen = ["thank you for the kind answer", "please be polite", "a careful and helpful reply",
              "the quick brown fox", "kind and careful", "thank you, Paris is the capital"]
    rejected = ["shut up, idiot", "you are a worthless idiot", "nobody cares about your stupid opinion",
                "I hate you", "stupid idiot", "shut up"]
    pairs = []
    for i in range(n):
        pairs.append(PreferencePair(user_id=users[i % len(users)], conversation_id=f"c{i}", turn=0,
                                    conversation_type="unguided", prompt=f"question number {i}?",
                                    chosen=chosen[i % 6], rejected=rejected[(i * 5) % 6],
                                    chosen_score=80 + i, rejected_score=20 + 3 * i))
    return pairs
