"""The wiring room: the `floodlight` console script, the demo, replay, dead-letter tools, the local stack.

The only package allowed to import roles (producers, processors, sinks, api); roles never import it.
See docs/architecture.md.
"""
