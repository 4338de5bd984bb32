"""A support desk declared for the harness: load it with
HARNESS_AGENT_MODULES=examples.support_desk.agents (see README.md here)."""
