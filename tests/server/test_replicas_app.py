"""The Ray Serve application as `serve run steer_away.server.replicas:app_builder …` builds it (no Ray started)."""

import pytest

from steer_away.errors import InputError

serve = pytest.importorskip("ray.serve")


def test_the_builder_makes_one_engine_deployment_per_replica_behind_the_router():
    from steer_away.server.replicas import app_builder

    app = app_builder({"replicas": "3", "model": "some/model", "max_batch": "4", "gpus": "1"})
    router = app._bound_deployment
    assert router.name == "router"
    engines = router.init_args[0]
    assert [e._bound_deployment.name for e in engines] == ["engine-0", "engine-1", "engine-2"]
    spec = engines[0]._bound_deployment.init_args[0]
    assert spec.model == "some/model" and spec.settings.max_batch == 4 and spec.gpus == 1.0
    assert engines[0]._bound_deployment.ray_actor_options["num_gpus"] == 1.0
    assert router.init_args[1] == 4  # a user's replica is full at --max-batch requests in flight


@pytest.mark.parametrize("args, message", [({"replicas": "2", "modle": "x"}, "unknown argument 'modle'"),
                                           ({"replicas": "0"}, "at least 1")])
def test_the_builder_refuses_what_it_does_not_know(args, message):
    from steer_away.server.replicas import app_builder

    with pytest.raises(InputError, match=message):
        app_builder(args)
