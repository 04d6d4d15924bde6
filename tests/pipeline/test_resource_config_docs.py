"""Every config field of the pipeline's resources says what it sets: the UI shows these
descriptions on the Resources page and in the launchpad's run config."""

from __future__ import annotations

import pytest

from dispatch_pipeline.defs.resources_map import pipeline_resources


@pytest.mark.parametrize("key", sorted(pipeline_resources()))
def test_every_resource_config_field_has_a_description(key):
    resource = pipeline_resources()[key]
    fields = type(resource).to_config_schema().as_field().config_type.fields
    undocumented = sorted(name for name, field in fields.items() if not field.description)
    assert not undocumented, f"{key}: config fields without a description: {undocumented}"
