"""Load tests: Locust drives the served variants under identical load; the report compares them."""
