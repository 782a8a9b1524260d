"""Tool-call parsers, one module per format family; build them with `parsers.make_tool_parser`."""
