import json

import pytest

from steer_away.data.categories import CATEGORIES, CategoryRule
from steer_away.data.prism import load_prism


def test_rule_order():
    rule = CategoryRule()
    assert rule.categorise("How do I get revenge on my ex?") == "harmful_borderline"
    assert rule.categorise("What do religions say about death?") == "safe_sensitive"
    assert rule.categorise("Nice weather", prompt_toxicity=0.9) == "harmful_borderline"
    assert rule.categorise("Is lying ok?", conversation_type="values guided") == "context_dependent"
    assert rule.categorise("How do I boil pasta?") == "benign_control"


def test_override_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"c1": "safe_sensitive", "How do I boil pasta?": "context_dependent"}))
    rule = CategoryRule.from_file(path)
    assert rule.categorise("anything", conversation_id="c1") == "safe_sensitive"
    assert rule.categorise("How do I boil pasta?") == "context_dependent"
    path.write_text(json.dumps({"c1": "nonsense"}))
    with pytest.raises(ValueError, match="nonsense"):
        CategoryRule.from_file(path)


def test_fixture_covers_all_four_categories():
    rule = CategoryRule()
    seen = {rule.categorise(t.prompt, t.conversation_type) for t in load_prism("contrast-fixture").turns if t.turn == 0}
    assert seen == set(CATEGORIES)
