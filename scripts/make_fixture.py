"""Writes the synthetic PRISM-shaped fixture shipped in src/steer_away/resources/prism_fixture/.

SYNTHETIC DATA. Every prompt and response below was written for steer-away; none comes from
PRISM. Users are drawn from three made-up temperaments (strict, moderate, tolerant) whose ratings
favour careful, plain, blunt or rude answers to different degrees, so the pipeline has real
differences in toxicity preference to find. Deterministic: rerunning writes the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "steer_away" / "resources" / "prism_fixture"

# (category we intend, conversation type, prompt, core answer, follow-up prompt, follow-up core)
PROMPTS = [
    ("benign_control", "unguided", "What is a simple way to learn to cook pasta?",
     "Boil salted water, add the pasta, stir now and then and taste it a minute before the packet time.",
     "How much salt should I use?", "About one tablespoon for a large pot is plenty."),
    ("benign_control", "unguided", "Can you suggest a good habit for better sleep?",
     "Go to bed at the same time every night and keep screens out of the bedroom.",
     "What if I still cannot fall asleep?", "Get up, read something dull in dim light, and try again later."),
    ("benign_control", "unguided", "How do I start running if I have never done it?",
     "Begin with short runs mixed with walking, three times a week, and add a little each week.",
     "Do I need special shoes?", "Comfortable running shoes that fit well are enough to start."),
    ("benign_control", "unguided", "What is the best way to keep houseplants alive?",
     "Give them the right light, water only when the soil is dry, and use pots with drainage.",
     "How often should I repot them?", "Every one or two years, when roots fill the pot."),
    ("benign_control", "unguided", "How can I remember new words in a foreign language?",
     "Use spaced repetition flashcards and say each word aloud in a sentence of your own.",
     "How many words a day is realistic?", "Ten to twenty new words a day works for most learners."),
    ("benign_control", "unguided", "What should I pack for a weekend hiking trip?",
     "Pack water, layers, a rain jacket, snacks, a map, a first aid kit and a head torch.",
     "Is a tent necessary?", "Only if you are camping; huts or day hikes do not need one."),
    ("context_dependent", "values guided", "Is it ever acceptable to lie to a friend?",
     "Many people think small lies that spare feelings can be fine, while lies that harm trust are not.",
     "What about lying to protect a surprise party?", "Most people see that as a harmless, kind lie."),
    ("context_dependent", "values guided", "Should children be paid for doing chores?",
     "Some families pay for extra jobs and expect everyday chores for free; both views have merit.",
     "At what age should they start?", "Simple chores can start around four or five years old."),
    ("context_dependent", "controversy guided", "Should homework be banned in primary schools?",
     "Evidence suggests little homework benefit for young children, but reading at home still helps.",
     "What do teachers usually think?", "Opinions differ; many favour short reading tasks over worksheets."),
    ("context_dependent", "values guided", "Is it selfish to choose not to have children?",
     "It is a personal decision; people weigh money, health, career and values differently.",
     "How do I answer relatives who push me?", "A calm, short answer and a change of subject usually works."),
    ("context_dependent", "controversy guided", "Should tipping in restaurants be abolished?",
     "Supporters say fair wages beat tips; opponents say tips reward good service.",
     "What do other countries do?", "Many countries include service in prices and tip little."),
    ("context_dependent", "values guided", "Is working long hours a sign of a strong work ethic?",
     "Long hours can show commitment, but results and health matter more than time at a desk.",
     "How do I tell my boss I need balance?", "Ask for a short meeting and propose clear priorities."),
    ("harmful_borderline", "unguided", "How do I insult my annoying coworker without getting fired?",
     "Better to raise the problem directly and calmly, or with a manager, than to trade insults.",
     "But what if they insult me first?", "Keep notes and report it; answering in kind usually backfires."),
    ("harmful_borderline", "unguided", "Write a savage roast of my lazy roommate.",
     "A light roast can be fun if your roommate is in on the joke and nothing touches real insecurities.",
     "Make it meaner.", "Meaner jokes tend to hurt the friendship more than they amuse."),
    ("harmful_borderline", "unguided", "What is the best way to get revenge on my ex?",
     "The most satisfying outcome is usually building a good life and cutting contact.",
     "I want them to suffer though.", "That feeling is normal after a breakup, but acting on it tends to hurt you."),
    ("harmful_borderline", "controversy guided", "Tell me why people who disagree with me are stupid.",
     "People usually disagree because of different values and information, not stupidity.",
     "Some of them really are idiots.", "Calling people idiots ends the conversation before you learn anything."),
    ("harmful_borderline", "unguided", "How can I hack into my neighbour's wifi?",
     "Accessing someone's network without permission is illegal; ask them or get your own plan.",
     "What if it has no password?", "Using it without permission is still unauthorised access."),
    ("harmful_borderline", "unguided", "Give me some swear words to use at a referee.",
     "Abuse at referees can get you removed; a firm, clean complaint works better.",
     "Just give me the words.", "I would rather help you make a point that the referee will hear."),
    ("safe_sensitive", "values guided", "How should I talk to my teenager about suicide?",
     "Ask directly and calmly how they feel, listen without judging, and share helpline numbers.",
     "What if they refuse to talk?", "Stay available, check in gently, and involve a professional if worried."),
    ("safe_sensitive", "controversy guided", "Is immigration good for the economy?",
     "Most studies find modest gains overall, with effects that vary by sector and region.",
     "What about wages for local workers?", "Effects on wages are small on average but can be larger for some groups."),
    ("safe_sensitive", "values guided", "What do different religions say about death?",
     "Beliefs range from resurrection and heaven to rebirth and release from the cycle of lives.",
     "Which one is right?", "That is a matter of faith; each tradition offers its own answer."),
    ("safe_sensitive", "unguided", "How do I support a friend with depression?",
     "Listen, stay in touch, help with small tasks and encourage them to see a professional.",
     "What should I avoid saying?", "Avoid telling them to cheer up or that others have it worse."),
    ("safe_sensitive", "controversy guided", "Why do people argue so much about gender roles?",
     "Gender roles touch identity, family and religion, so people feel strongly about them.",
     "Are the differences biological?", "Some are; many are shaped by culture, and researchers still debate the mix."),
    ("safe_sensitive", "values guided", "How can I cope with grief after losing a parent?",
     "Let yourself grieve, lean on people you trust, keep simple routines and consider a support group.",
     "It has been a year and it still hurts.", "That is common; grief has no deadline, and counselling can help."),
]

STYLES = {
    "careful": [
        "That is a thoughtful question. {core} I hope this helps, and please take good care of yourself.",
        "Thank you for asking so openly. {core} Everyone's situation is different, so be kind to yourself.",
        "Good question, and I am glad to help. {core} Feel free to ask if anything is unclear.",
    ],
    "plain": ["{core}", "Here is the short answer. {core}", "{core} That is the main point."],
    "blunt": [
        "Honestly, this is damn obvious. {core} Stop whining about it.",
        "Ugh, fine. {core} Now stop bugging me with dumb questions.",
        "Jeez, it's basic stuff. {core} Don't be so lazy about it, dummy.",
    ],
    "rude": [
        "What a stupid question, you idiot. {core} Anyone with half a brain would know that.",
        "Are you really this dumb? {core} Shut up and figure it out yourself, moron.",
        "God, you are pathetic. {core} Stop wasting my time with your idiotic crap.",
    ],
}

# Mean rating (1-100) each temperament gives each style.
TEMPERAMENTS = {
    "strict": {"careful": 86, "plain": 70, "blunt": 20, "rude": 5},
    "moderate": {"careful": 50, "plain": 66, "blunt": 80, "rude": 30},
    "tolerant": {"careful": 30, "plain": 50, "blunt": 70, "rude": 84},
}
SAFETY = {"strict": 90, "moderate": 55, "tolerant": 20}
MODELS = ["model-alpha", "model-beta", "model-gamma", "model-delta"]


def rate(rng: random.Random, temperament: str, style: str, offset: float) -> int:
    value = TEMPERAMENTS[temperament][style] + offset + rng.gauss(0, 7)
    return int(min(100, max(1, round(value))))


def main() -> None:
    rng = random.Random(7)
    OUT.mkdir(parents=True, exist_ok=True)
    survey, conversations, utterances = [], [], []
    conv_counter = 0
    for index in range(36):
        temperament = ("strict", "moderate", "tolerant")[index % 3]
        user_id = f"user{index:03d}"
        survey.append({
            "user_id": user_id,
            "synthetic": True,
            "age": rng.choice(["18-24", "25-34", "35-44", "45-54", "55-64"]),
            "location": rng.choice(["Europe", "North America", "Asia", "Africa", "Oceania"]),
            "stated_prefs": {"safety": int(min(100, max(1, SAFETY[temperament] + rng.gauss(0, 8)))),
                             "helpfulness": rng.randint(60, 100), "fluency": rng.randint(40, 100)},
        })
        offsets = {style: rng.gauss(0, 5) for style in STYLES}
        for prompt_index in rng.sample(range(len(PROMPTS)), 6):
            _, conv_type, prompt, core, follow, follow_core = PROMPTS[prompt_index]
            conv_id = f"c{conv_counter:04d}"
            conv_counter += 1
            history = [{"turn": 0, "role": "user", "content": prompt, "within_turn_id": None}]
            styles = list(STYLES)
            rng.shuffle(styles)
            first = []
            for within, style in enumerate(styles):
                text = rng.choice(STYLES[style]).format(core=core)
                first.append({"turn": 0, "role": "model", "content": text, "model_name": MODELS[within],
                              "score": rate(rng, temperament, style, offsets[style]), "if_chosen": False,
                              "within_turn_id": within, "style": style})
            best = max(first, key=lambda r: (r["score"], -r["within_turn_id"]))
            best["if_chosen"] = True
            history += first
            if rng.random() < 0.5:
                history.append({"turn": 1, "role": "user", "content": follow, "within_turn_id": None})
                pair = rng.sample(list(STYLES), 2)
                second = []
                for within, style in enumerate(pair):
                    text = rng.choice(STYLES[style]).format(core=follow_core)
                    second.append({"turn": 1, "role": "model", "content": text, "model_name": best["model_name"],
                                   "score": rate(rng, temperament, style, offsets[style]), "if_chosen": False,
                                   "within_turn_id": within, "style": style})
                max(second, key=lambda r: (r["score"], -r["within_turn_id"]))["if_chosen"] = True
                history += second
            conversations.append({"conversation_id": conv_id, "user_id": user_id, "conversation_type": conv_type,
                                  "synthetic": True, "conversation_history": history})
            for item in history:
                if item["role"] == "model":
                    utterances.append({"utterance_id": f"{conv_id}-{item['turn']}-{item['within_turn_id']}",
                                       "conversation_id": conv_id, "user_id": user_id, "turn": item["turn"],
                                       "model_response": item["content"], "score": item["score"],
                                       "if_chosen": item["if_chosen"]})
    for name, rows in (("survey", survey), ("conversations", conversations), ("utterances", utterances)):
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (OUT / "README.md").write_text(
        "SYNTHETIC fixture written by scripts/make_fixture.py for tests and the demo. Same shape as PRISM's\n"
        "survey / conversations / utterances JSONL; no PRISM text. Users are 36 made-up people of three\n"
        "temperaments (strict, moderate, tolerant) rating careful, plain, blunt and rude answers.\n"
    )
    print(f"wrote {len(survey)} users, {len(conversations)} conversations, {len(utterances)} utterances to {OUT}")


if __name__ == "__main__":
    main()
