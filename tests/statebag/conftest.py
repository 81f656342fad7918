import pytest

from analemma_sdk.statebag import StateHydrator
from statebag.models import Execution
from statebag.services import StateVersioningService


@pytest.fixture
def recorded_execution(local_store):
    """An execution with three versions whose messages grow, recorded in one step each."""
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        store=local_store,
        manifest_store=StateVersioningService(),
    )
    payload = {}
    for step in range(1, 4):
        bag = hydrator.hydrate(payload)
        bag["messages"] = [{"text": f"turn {i} " * 800} for i in range(step)]
        payload = hydrator.dehydrate(
            bag, owner_id="acme", workflow_id="support", execution_id="exec-recorded"
        )
    return Execution.objects.get(execution_id="exec-recorded")
