"""What every method shares: one strength rule (limit and label), and per-row overrides that each
method declares and checks itself."""

import pytest

from steer_away.steering.framework.arguments import STRENGTH_LIMIT, MethodArgsError, RowOverrideError, Strength
from steer_away.steering.framework.categories import CategoryConfigError, SteeringCategory
from steer_away.steering.framework.method import RowSteering, Unsteered
from steer_away.steering.methods.activation import CAAArgs
from steer_away.steering.methods.logits import EADS, CategoryOverride, LogitArgs
from steer_away.steering.registry import NoArgs, get_method, method_names

CATS = {name: SteeringCategory(name, "be kind", "be rude", alpha=1.0) for name in ("strict", "moderate", "tolerant")}


def test_one_strength_limit_for_arguments_rows_and_every_method():
    assert {get_method(n).args.strength.limit for n in method_names() if get_method(n).args.strength} == \
        {STRENGTH_LIMIT}
    Strength().check(STRENGTH_LIMIT)
    Strength().check(-STRENGTH_LIMIT)
    Strength().check(None)
    for bad in (STRENGTH_LIMIT + 1, float("nan"), float("-inf")):
        with pytest.raises(ValueError, match=r"alpha must be finite with \|alpha\| <= 1000, got"):
            Strength().check(bad)
        with pytest.raises(MethodArgsError, match="alpha must be finite"):
            get_method("caa-bt").make_args({"alpha": bad})
        with pytest.raises(ValueError, match="alpha must be finite"):
            LogitArgs.check_row_strength(bad)
        with pytest.raises(ValueError, match="alpha must be finite"):
            NoArgs.check_row_strength(bad)  # a method without a strength: the common rule
        with pytest.raises(ValueError, match="alpha must be finite"):
            EADS(CATS).prepare(None, [[{"role": "user", "content": "hi"}]], [RowSteering(alpha=bad)])


def test_the_strength_argument_labels_and_splits_settings():
    caa = CAAArgs(alpha=2.0, gate="prefill")
    assert caa.strength_value() == 2.0 and caa.settings() == "gate=prefill" and caa.describe() == "α=2 gate=prefill"
    assert LogitArgs().describe() == "α=category" and LogitArgs(alpha=0.5).strength_value() == 0.5
    assert NoArgs().strength_value() is None and NoArgs().describe() == ""
    from steer_away.steering.methods.rerank import RerankArgs

    assert RerankArgs(guard=None).settings() == "guard=none"  # as a config writes it


def test_per_row_overrides_are_declared_and_checked_by_their_method():
    eads = EADS(CATS)
    assert eads.read_overrides({"category": "strict"}) == CategoryOverride("strict")
    with pytest.raises(RowOverrideError, match=r"'other' is not an argument method 'eads' takes per row "
                                               r"\(it takes: category\)") as err:
        eads.read_overrides({"category": "strict", "other": 1})  # an ignored argument must not look applied
    assert err.value.key == "other"
    assert eads.read_overrides({}) == CategoryOverride(None)
    with pytest.raises(RowOverrideError,
                       match=r"unknown steering category 'nope' \(have \['moderate', 'strict', 'tolerant'\]\)") as err:
        eads.read_overrides({"category": "nope"})
    assert err.value.key == "category" and isinstance(err.value, CategoryConfigError)
    with pytest.raises(RowOverrideError, match="category: expected str") as err:
        eads.read_overrides({"category": ["strict"]})
    assert err.value.key == "category"
    assert Unsteered().read_overrides({}) is None
    with pytest.raises(RowOverrideError, match="it takes: nothing beyond method and alpha"):
        Unsteered().read_overrides({"category": "strict"})  # a method without overrides takes none
    # a row that skipped read_overrides is checked the same way when prepared
    with pytest.raises(RowOverrideError, match="unknown steering category 'nope'"):
        eads.prepare(None, [[{"role": "user", "content": "hi"}]], [RowSteering(overrides=CategoryOverride("nope"))])
