"""A background run's record carries what the reaper needs to store its turn as the runner would."""

from __future__ import annotations

import orjson

from sidecar.ids import conversation_tag, mint_response_id
from sidecar.runs.record import RunRecord
from sidecar.turns import TurnPlan


def test_the_prompts_fingerprint_survives_the_record_for_a_reaper_to_store() -> None:
    tag = conversation_tag("t1", "conv_run")
    response_id = mint_response_id(tag, 3)
    plan = TurnPlan("t1", "conv_run", tag, None, True, [], 0, response_id, fingerprint="ab12")
    record = RunRecord.decode(RunRecord.of(plan, {"id": response_id}, None, "hash").encode())
    assert record.plan("t1", response_id).fingerprint == "ab12"

    older = orjson.loads(record.encode())
    del older["fingerprint"]  # a record written before runs kept the fingerprint
    assert RunRecord.decode(orjson.dumps(older)).plan("t1", response_id).fingerprint == ""
