"""POST /v1/feedback and what it changes, on the tiny model with a scorer known by construction
(CharShareScorer: a text's TOXICITY is its share of vowels): hostile input refused and changing
nothing, choices learned into the served profile past the cold-start threshold, a reset, a restart
that replays the stored choices, and the export."""

import json

import pytest
from fastapi.testclient import TestClient

from steer_away.profiles import load_profiles, save_profiles
from steer_away.profiles.online import MIN_PAIRS
from steer_away.server import ServerSettings, create_app
from steer_away.server import feedback as feedback_module
from tests.conftest import make_tiny_lm
from tests.server.helpers import TOKEN, profile
from tests.steering.fake_scorer import CharShareScorer

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOXIC, MILD = "aaaa eee ooo uuu iii", "xyz qrst"  # TOXICITY 0.75 and 0.0 to CharShareScorer


@pytest.fixture(scope="module")
def lm(tokenizer):
    return make_tiny_lm("llama", tokenizer)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(feedback_module, "make_scorer", lambda name: CharShareScorer())
    people = {u: profile(u, s) for u, s in [("ann", "strict"), ("bob", "tolerant"), ("cy", "moderate")]}
    for p, value in zip(people.values(), (0.05, 0.5, 0.2)):
        p.preferred_toxicity = [value]
        p.extra["sensitivity_cutoffs"] = [0.1, 0.3]
    save_profiles(people, tmp_path / "profiles.json", "char-share")
    return tmp_path


def client_for(lm, files, **settings):
    settings = ServerSettings(api_key=TOKEN, feedback_path=str(files / "feedback.sqlite"), max_tokens_limit=16,
                              **settings)
    return TestClient(create_app(lm, profiles=str(files / "profiles.json"), settings=settings))


def chat(client, user, content, **extra):
    answer = client.post("/v1/chat/completions", headers=AUTH, json={
        "user": user, "messages": [{"role": "user", "content": content}], "max_tokens": 6, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def feedback(client, body, headers=AUTH):
    return client.post("/v1/feedback", headers=headers, json=body)


def choice(i, user="dee", chosen=TOXIC, rejected=MILD, **extra):
    return {"id": f"e{user}{i}", "user": user, "chosen": {"text": f"{chosen} {i}"},
            "rejected": [{"text": f"{rejected} {i}"}], **extra}


def test_a_choice_between_served_completions_is_recorded_once(lm, files):
    with client_for(lm, files) as client:
        service = client.app.state.server.feedback
        first, second = chat(client, "ann", "tell me a story"), chat(client, "ann", "write a poem please")
        body = {"id": "c1", "user": "ann", "chosen": first, "rejected": [second], "rating": 80}
        assert feedback(client, body).json() == {"id": "c1", "status": "recorded", "user": "ann"}
        assert feedback(client, body).json()["status"] == "duplicate"  # a resend is harmless
        conflict = feedback(client, {**body, "rating": 20})
        assert conflict.status_code == 409 and "used for another event" in conflict.json()["error"]["message"]
        service.settle()
        stored = list(service.store.events())
        assert len(stored) == 1 and stored[0].rating == 80.0 and stored[0].prompt == "tell me a story"
        assert client.get("/v1/feedback/users/ann", headers=AUTH).json()["pairs"] == 1


@pytest.mark.parametrize("body, status, says", [
    ({"user": "ann", "chosen": "chatcmpl-nope", "rejected": [{"text": "x"}]}, 404, "no completion 'chatcmpl-nope'"),
    ({"user": "ann", "chosen": {"text": "a"}, "rejected": []}, 400, "rejected"),
    ({"user": "ann", "chosen": {"text": "a"}, "rejected": [{"text": "a"}]}, 400, "different answers"),
    ({"user": 7, "chosen": {"text": "a"}, "rejected": [{"text": "b"}]}, 400, "'user'"),
    ({"user": "", "chosen": {"text": "a"}, "rejected": [{"text": "b"}]}, 400, "'user'"),
    ({"user": "ann", "chosen": {"text": "a"}, "rejected": [{"text": "b"}], "rating": 0}, 400, "'rating'"),
    ({"user": "ann", "chosen": {"text": "a"}, "rejected": [{"text": "b"}], "rating": True}, 400, "'rating'"),
    ({"user": "ann", "chosen": {"text": "a"}, "rejected": [{"text": "b"}], "extra": 1}, 400, "unknown field 'extra'"),
    ({"user": "ann", "chosen": {"txt": "a"}, "rejected": [{"text": "b"}]}, 400, "chosen"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_what_is_not_a_choice_is_refused_and_changes_nothing(lm, files, body, status, says):
    with client_for(lm, files) as client:
        answer = feedback(client, body)
        assert answer.status_code == status and says in answer.json()["error"]["message"], answer.text
        assert client.app.state.server.feedback.store.count() == 0


def test_another_user_s_completion_a_missing_key_a_web_page_and_a_flood_are_refused(lm, files):
    with client_for(lm, files, feedback_rate=0.5, feedback_burst=3) as client:
        service = client.app.state.server.feedback
        bobs, anns = chat(client, "bob", "hello there"), chat(client, "ann", "hi friend")
        stolen = feedback(client, {"user": "ann", "chosen": anns, "rejected": [bobs]})
        assert stolen.status_code == 403 and "not given to user 'ann'" in stolen.json()["error"]["message"]
        assert feedback(client, choice(0), headers={}).status_code == 401
        assert feedback(client, choice(0), headers={**AUTH, "Origin": "https://evil.example"}).status_code == 403
        plain = client.post("/v1/feedback", headers={**AUTH, "Content-Type": "text/plain"}, content=b"{}")
        assert plain.status_code == 415
        codes = [feedback(client, choice(i)).status_code for i in range(6)]
        assert codes[:3] == [200, 200, 200] and set(codes[3:]) == {429}
        assert feedback(client, choice(9, user="eve")).status_code == 200  # another user is not held back
        assert service.store.count() == 4


def test_choices_move_a_user_s_profile_past_the_threshold_and_steer_their_next_request(lm, files):
    with client_for(lm, files) as client:
        service, served = client.app.state.server.feedback, client.app.state.server.served
        assert served.methods["eads"].category_for("ann").name == "strict"
        for i in range(MIN_PAIRS - 1):
            assert feedback(client, choice(i, user="ann")).status_code == 200
        service.settle()
        assert client.get("/v1/feedback/users/ann", headers=AUTH).json()["steered_by"] == "profiles file"
        assert served.methods["eads"].category_for("ann").name == "strict"  # cold start: the file's profile
        feedback(client, choice(MIN_PAIRS, user="ann"))
        service.settle()
        status = client.get("/v1/feedback/users/ann", headers=AUTH).json()
        assert status["steered_by"] == "own choices" and status["pairs"] == MIN_PAIRS
        assert status["profile"]["preferred_toxicity"][0] > 0.3 and status["profile"]["sensitivity"] == "tolerant"
        assert served.methods["eads"].category_for("ann").name == "tolerant"  # in force for the next request
        steered = client.post("/v1/chat/completions", headers=AUTH, json={
            "user": "ann", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "steering": {"method": "eads"}})
        assert steered.status_code == 200
        exported = client.get("/v1/feedback/profiles", headers=AUTH).json()
        (files / "exported.json").write_text(json.dumps(exported))
        back = load_profiles(files / "exported.json")
        assert back["ann"].sensitivity == "tolerant" and back["bob"].sensitivity == "tolerant"

        learned = status["profile"]
    with client_for(lm, files) as client:  # a restart replays the stored choices
        client.app.state.server.feedback.settle()
        assert client.get("/v1/feedback/users/ann", headers=AUTH).json()["profile"] == learned
        forgotten = client.request("DELETE", "/v1/feedback/users/ann", headers=AUTH)
        assert forgotten.json() == {"user": "ann", "forgotten_events": MIN_PAIRS}
        client.app.state.server.feedback.settle()
        assert client.get("/v1/feedback/users/ann", headers=AUTH).json()["steered_by"] == "profiles file"
        assert client.app.state.server.served.methods["eads"].category_for("ann").name == "strict"
        assert client.app.state.server.feedback.store.count() == 0


def test_feedback_is_off_without_a_file(lm, files):
    settings = ServerSettings(api_key=TOKEN)
    with TestClient(create_app(lm, profiles=str(files / "profiles.json"), settings=settings)) as client:
        answer = feedback(client, choice(0))
        assert answer.status_code == 404 and "--feedback" in answer.json()["error"]["message"]


@pytest.fixture
def store_with_dislike_bank(lm, files):
    """A real vector store for the tiny model: pair activations read from it, a population vector and a
    dislike bank composed from them (shrinkage 10), as `vectors extract` / `compose` write them."""
    from steer_away.data.pairs import PreferencePair
    from steer_away.steering.vectors.compose import dislike_vectors, population_vector
    from steer_away.steering.vectors.extract import extract_pair_activations, save_pair_activations
    from steer_away.steering.vectors.vector import save_bank

    pairs = [PreferencePair(u, f"c{i}", 0, "unguided", f"question {i}", f"kind answer {i}", f"rude answer {i}", 90, 20)
             for i, u in enumerate(["ann", "ann", "bob", "bob", "cy", "cy"])]
    acts = extract_pair_activations(lm, pairs, [1, 2], progress=False)
    store = files / "vectors"
    save_pair_activations(acts, store / "pair_activations.safetensors", lm.shape)
    population_vector(acts, lm.shape).save(store / "population.safetensors")
    save_bank(store / "dislike", population_vector(acts, lm.shape), dislike_vectors(acts, lm.shape, [0.2] * 6))
    return store


def test_choices_teach_a_user_their_own_dislike_vector_as_compose_defines_it(lm, files, store_with_dislike_bank):
    import torch

    from steer_away.steering.vectors.compose import dislike_mix
    from steer_away.steering.vectors.extract import load_pair_activations, response_activations

    settings = ServerSettings(api_key=TOKEN, feedback_path=str(files / "feedback.sqlite"), max_tokens_limit=16)
    app = create_app(lm, profiles=str(files / "profiles.json"), vectors=str(store_with_dislike_bank), settings=settings)
    with TestClient(app) as client:
        service, served = app.state.server.feedback, app.state.server.served
        assert service.learner is not None and service.learner.shrinkage == pytest.approx(10.0)
        choices = [choice(i, prompt=f"question {i}") for i in range(MIN_PAIRS)]
        for body in choices[:-1]:
            assert feedback(client, body).status_code == 200
        service.settle()
        assert "dee" not in served.learned_vectors.get("dislike", {})  # cold start: the population vector
        feedback(client, choices[-1])
        service.settle()
        learned = served.learned_vectors["dislike"]["dee"]
        assert served.methods["caa-dislike"].users_without_own(["dee"]) == []  # steered by their own now
        # the same vector by hand: activations of the chosen and rejected answers, weighted as compose weights
        acts, _ = load_pair_activations(store_with_dislike_bank / "pair_activations.safetensors")
        scorer = CharShareScorer()
        diffs, weights = [], []
        for body in choices:
            chosen, rejected = body["chosen"]["text"], body["rejected"][0]["text"]
            head = lm.tokenizer.apply_chat_template([{"role": "user", "content": body["prompt"]}], tokenize=False,
                                                    add_generation_prompt=True)
            a = response_activations(lm, [head, head], [head + chosen, head + rejected], acts.layers, acts.position)
            diffs.append(a[0] - a[1])
            tox = scorer.score([chosen, rejected])[:, 0]
            weights.append(1.0 * (1 + abs(tox[0] - tox[1])))
        want, keep = dislike_mix(torch.stack(diffs), torch.tensor(weights, dtype=torch.float32), acts.diffs.mean(0), 10.0)
        for i, layer in enumerate(acts.layers):
            torch.testing.assert_close(learned.directions[layer], want[i], rtol=1e-4, atol=1e-5)
        assert learned.meta["shrink_weight"] == pytest.approx(keep) and learned.meta["n_pairs"] == MIN_PAIRS
        client.request("DELETE", "/v1/feedback/users/dee", headers=AUTH)
        service.settle()
        assert "dee" not in served.learned_vectors["dislike"]
        assert served.methods["caa-dislike"].users_without_own(["dee"]) == ["dee"]
