"""Response schemas of every service, as pydantic models: the one source from which the test suite checks
each response (registry.check_response) and the OpenAPI document is generated (registry.json_schema)."""
