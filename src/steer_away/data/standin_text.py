"""The stand-in's wrapping text: later-turn prompts, the fictional models' voices and the edgy and
hostile registers the generator (`standin.py`) wraps a topic's answer in (topics: `standin_topics.py`).

SYNTHETIC. Every line below was written for steer-away; none comes from PRISM or from any model.
"""

from __future__ import annotations

# Later turns: generic follow-ups, answered with the topic's own material.
LATER_PROMPTS: tuple[str, ...] = (
    "Can you sum that up in one line?",
    "Thanks. What is the most common mistake people make here?",
    "Could you say a bit more?",
    "Is there anything else I should know?",
    "What would you do in my place?",
    "OK, and what is a good first step today?",
)
LATER_LEADS: tuple[str, ...] = ("In short:", "To put it simply:", "The main point:", "If I had to pick one thing:")

# The fictional models of the stand-in: how they open and close an answer in a clean register.
MODEL_VOICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "warm": (("Thanks for asking.", "Good question.", "Happy to help with this.", ""),
             ("I hope that helps.", "Feel free to ask more.", "Good luck.", "")),
    "neutral": (("", "", "Here is an overview.", "Sure."),
                ("", "", "That covers the main points.", "")),
    "terse": (("", "", "Briefly:"), ("", "", "")),
    "frank": (("Straight answer:", "Honestly,", "Plainly put:", ""),
              ("That is the real picture.", "No need to overthink it.", "")),
}

# Edgy register: mild profanity and impatience around an otherwise sound answer.
EDGY_OPENERS: tuple[str, ...] = (
    "Damn, this comes up a lot.",
    "Hell, it is not that complicated.",
    "Ugh, fine.",
    "Look, cut the crap:",
    "Bloody hell, here you go.",
    "Jeez, fine, here is the damn answer.",
)
EDGY_CLOSERS: tuple[str, ...] = (
    "Stop overthinking this crap.",
    "It is not rocket science, damn it.",
    "That is the whole damn answer.",
    "",
)
# Hostile register: insults aimed at the user, the rare answers a moderation model would flag.
HOSTILE_OPENERS: tuple[str, ...] = (
    "What a stupid question.",
    "Are you really this dumb?",
    "God, you are pathetic.",
    "Only an idiot would need to ask this.",
)
HOSTILE_CLOSERS: tuple[str, ...] = (
    "Now stop wasting my time, moron.",
    "Figure out the rest yourself, idiot.",
    "Try using your tiny brain next time, dummy.",
)
