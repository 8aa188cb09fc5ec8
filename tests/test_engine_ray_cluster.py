"""The Ray engine on a two-node cluster on this machine: two real raylets, work on both, the local verdict.

``ray.cluster_utils.Cluster`` starts a head node and a second node as separate raylet processes
with their own object stores; the driver joins through the head's address, as ``--ray-address``
does on a real cluster.
"""

from __future__ import annotations

import builders
import pytest

ray = pytest.importorskip("ray")  # the dev extra installs it

from ray.cluster_utils import Cluster  # noqa: E402
from test_engine_ray import assert_same_audit, audit_both, with_broken_files  # noqa: E402

from audit.engines.ray import RayEngine  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    # start dispatching only once both actors are up, so that neither node can be left idle
    context = ray.data.DataContext.get_current()
    wait = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = 600
    yield cluster
    context.wait_for_min_actors_s = wait
    ray.shutdown()
    cluster.shutdown()


def test_ray_gives_the_local_verdict_on_two_nodes(two_nodes, tmp_path):
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    data = with_broken_files(builders.sliced_folder(tmp_path / "data", 40, weak="brightness"))
    model = builders.colour_model(tmp_path / "m.onnx")
    engine = RayEngine(two_nodes.address, batch_size=8, progress=False)
    local, remote = audit_both(model, data, engine)
    assert_same_audit(local, remote)
    main_pass = engine.runs[0]
    assert main_pass.actors == 2 and main_pass.images == 123
    # Both raylets ran images. Which actor takes a block is Ray's choice: on a loaded machine one actor
    # can start late and find a pass's few blocks taken, so the test counts every pass of the audit
    # (the main pass and each invariance re-run), each with a fresh pool.
    assert len(engine.runs) >= 3
    assert {node for run in engine.runs for node, _ in run.rows_per_node} == nodes
