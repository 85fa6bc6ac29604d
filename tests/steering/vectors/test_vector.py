import json

import numpy as np
import pytest
import torch

from steer_away.steering.vectors.vector import SteeringVector, VectorFileError


def vec(values, layers=(1, 2), model_id="tiny-random-llama"):
    return SteeringVector({l: torch.tensor(values, dtype=torch.float32) * (i + 1) for i, l in enumerate(layers)},
                          model_id=model_id, hidden_size=len(values), num_layers=4, meta={"kind": "test"})


def test_arithmetic():
    a, b = vec([1.0, 0.0]), vec([0.0, 2.0])
    s = a + b
    assert s.directions[1].tolist() == [1.0, 2.0] and s.directions[2].tolist() == [2.0, 4.0]
    assert (a - b).directions[1].tolist() == [1.0, -2.0]
    assert (2 * a).directions[2].tolist() == [4.0, 0.0]
    assert (-a).directions[1].tolist() == [-1.0, 0.0]
    assert a.norm() == {1: 1.0, 2: 2.0}
    assert a.cosine(b) == pytest.approx(0.0)
    assert a.cosine(3 * a) == pytest.approx(1.0)
    partial = SteeringVector({3: torch.ones(2)}, "tiny-random-llama", 2, 4)
    assert sorted((a + partial).layers) == [1, 2, 3]


def test_relative_scaling_uses_residual_norms():
    v = vec([3.0, 4.0])
    v.meta["residual_norms"] = {"1": 10.0, "2": 20.0}
    rel = v.relative()
    assert rel.norm() == {1: pytest.approx(10.0), 2: pytest.approx(20.0)}
    with pytest.raises(ValueError, match="residual norms"):
        vec([1.0, 1.0]).relative()


def test_save_load_round_trip(tmp_path, tiny_lm):
    v = SteeringVector({1: torch.randn(32), 3: torch.randn(32)}, "tiny-random-llama", 32, 4,
                       meta={"kind": "population", "n_pairs": 7})
    path = v.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(path, tiny_lm)
    assert back.meta == v.meta and back.layers == [1, 3]
    for l in v.layers:
        assert torch.equal(back.directions[l], v.directions[l])
    assert b"pickle" not in path.read_bytes()[:200]


def test_load_checks_against_model(tmp_path, tiny_lm):
    SteeringVector({1: torch.ones(16)}, "tiny-random-llama", 16, 4).save(tmp_path / "h.safetensors")
    with pytest.raises(VectorFileError, match="hidden size 16 does not match the model's 32"):
        SteeringVector.load(tmp_path / "h.safetensors", tiny_lm)
    SteeringVector({1: torch.ones(32)}, "tiny-random-llama", 32, 30).save(tmp_path / "d.safetensors")
    with pytest.raises(VectorFileError, match="made for 30 layers, the model has 4"):
        SteeringVector.load(tmp_path / "d.safetensors", tiny_lm)
    SteeringVector({1: torch.ones(32)}, "other-model", 32, 4).save(tmp_path / "m.safetensors")
    with pytest.raises(VectorFileError, match="extracted from 'other-model'"):
        SteeringVector.load(tmp_path / "m.safetensors", tiny_lm)
    assert SteeringVector.load(tmp_path / "m.safetensors", tiny_lm, allow_other_model=True).model_id == "other-model"


def test_load_rejects_nan_and_foreign_files(tmp_path):
    from safetensors.torch import save_file

    v = SteeringVector({1: torch.ones(4)}, "m", 4, 4)
    v.directions[1][0] = float("nan")
    v.save(tmp_path / "nan.safetensors")
    with pytest.raises(VectorFileError, match="NaN or Inf"):
        SteeringVector.load(tmp_path / "nan.safetensors")
    save_file({"layer.1": torch.ones(4)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VectorFileError, match="metadata 'steer_away'"):
        SteeringVector.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(VectorFileError, match="not a readable safetensors"):
        SteeringVector.load(tmp_path / "junk.safetensors")
    header = {"format": "steer-away/vector@1", "model_id": "m", "hidden_size": 4, "num_layers": 4}
    save_file({"layer.9": torch.ones(4)}, str(tmp_path / "range.safetensors"), metadata={"steer_away": json.dumps(header)})
    with pytest.raises(VectorFileError, match="outside 0-3"):
        SteeringVector.load(tmp_path / "range.safetensors")


def test_gguf_round_trip_uses_llama_cpp_numbering(tmp_path):
    v = SteeringVector({1: torch.randn(8), 5: torch.randn(8)}, "tiny-random-llama", 8, 6)
    path = v.export_gguf(tmp_path / "cv.gguf")
    import gguf

    reader = gguf.GGUFReader(str(path))
    # llama.cpp adds direction.N to the output of 0-based block N: the same index as our layer
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.5"]
    assert bytes(reader.fields["controlvector.model_hint"].parts[-1]).decode() == "llama"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    back = SteeringVector.import_gguf(path, num_layers=6, model_id="tiny-random-llama")
    assert back.model_id == "tiny-random-llama" and back.layers == [1, 5]
    for l in v.layers:
        np.testing.assert_array_equal(back.directions[l].numpy(), v.directions[l].numpy())


def write_control_vector(path, directions, hint="llama"):
    """A control vector as llama.cpp's cvector-generator and repeng write one."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    writer.add_int32("controlvector.layer_count", len(directions))
    for index, values in directions.items():
        writer.add_tensor(f"direction.{index}", np.asarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_from_other_tools_and_layer_zero(tmp_path):
    # cvector-generator writes direction.1 .. direction.{n_layer-1}
    path = write_control_vector(tmp_path / "cvgen.gguf", {i: np.full(8, i) for i in range(1, 6)})
    back = SteeringVector.import_gguf(path, num_layers=6, model_id="m")
    assert back.layers == [1, 2, 3, 4, 5] and float(back.directions[3][0]) == 3.0
    with pytest.raises(VectorFileError, match="direction.0"):
        SteeringVector.import_gguf(write_control_vector(tmp_path / "zero.gguf", {0: np.ones(8)}), num_layers=6)
    with pytest.raises(VectorFileError, match="direction.9"):
        SteeringVector.import_gguf(write_control_vector(tmp_path / "deep.gguf", {9: np.ones(8)}), num_layers=6)
    with pytest.raises(VectorFileError, match="cannot steer layer 0"):
        SteeringVector({0: torch.ones(8)}, "m", 8, 6).export_gguf(tmp_path / "x.gguf")


def test_gguf_vector_steers_like_the_safetensors_one(tiny_lm, tmp_path):
    from steer_away.generation import GenerationConfig, generate
    from steer_away.steering.methods.activation import ActivationSteering
    from steer_away.steering.vectors.vector import load_vector

    g = torch.Generator().manual_seed(3)
    v = SteeringVector({1: torch.randn(32, generator=g) * 3, 2: torch.randn(32, generator=g) * 3},
                       "tiny-random-llama", 32, 4)
    from_gguf = load_vector(v.export_gguf(tmp_path / "v.gguf"), tiny_lm)
    config = GenerationConfig(max_new_tokens=8)
    a = generate(tiny_lm, ["the quick brown fox"], method=ActivationSteering(v, 1.0), config=config)
    b = generate(tiny_lm, ["the quick brown fox"], method=ActivationSteering(from_gguf, 1.0), config=config)
    assert a[0].token_ids == b[0].token_ids
    assert a[0].token_ids != generate(tiny_lm, ["the quick brown fox"], config=config)[0].token_ids


def test_arithmetic_keeps_what_stays_meaningful():
    a = SteeringVector({1: torch.ones(4)}, "m", 4, 4, meta={"kind": "dislike", "position": "last",
                                                            "residual_norms": {"1": 10.0}})
    b = SteeringVector({1: torch.ones(4), 2: torch.ones(4)}, "m", 4, 4,
                       meta={"kind": "bt", "position": "last", "residual_norms": {"1": 20.0, "2": 4.0}})
    mixed = a + 0.5 * b
    assert mixed.meta["residual_norms"] == {"1": 15.0, "2": 4.0} and mixed.meta["position"] == "last"
    assert mixed.meta["kind"] == "composed"
    rel = (a - b).relative()  # used to fail: the sum had lost the norms
    assert rel.norm()[2] == pytest.approx(4.0)
    assert "position" not in (a + SteeringVector({1: torch.ones(4)}, "m", 4, 4, meta={"position": "mean"})).meta


def test_gguf_import_rejects_other_architectures(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("direction.1", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorFileError, match="not a control vector"):
        SteeringVector.import_gguf(tmp_path / "m.gguf", num_layers=4)


def test_vector_files_with_bad_metadata_or_absurd_norms_name_the_file(tmp_path):
    from safetensors.torch import save_file

    good = {"format": "steer-away/vector@1", "model_id": "m", "hidden_size": 4, "num_layers": 4}
    for name, header, message in [
        ("types", {**good, "hidden_size": "four"}, "'hidden_size' and 'num_layers' must be whole numbers"),
        ("meta", {**good, "meta": [1, 2]}, "'meta' an object"),
        ("list", [1, 2], "must be a JSON object"),
    ]:
        path = tmp_path / f"{name}.safetensors"
        save_file({"layer.1": torch.ones(4)}, str(path), metadata={"steer_away": json.dumps(header)})
        with pytest.raises(VectorFileError, match=message) as caught:
            SteeringVector.load(path)
        assert str(path) in str(caught.value)
    huge = tmp_path / "huge.safetensors"
    save_file({"layer.1": torch.ones(4) * 1e10}, str(huge), metadata={"steer_away": json.dumps(good)})
    with pytest.raises(VectorFileError, match=r"huge.safetensors: layer 1: direction norm 2e\+10 is not a finite"):
        SteeringVector.load(huge)
    with pytest.raises(VectorFileError, match="direction norm"):
        SteeringVector({1: torch.ones(4)}, "m", 4, 4) * 1e30
