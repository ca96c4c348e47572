"""Reach beyond the terminal: a run as OpenTelemetry spans, a web page, a picture.

* :mod:`.runfacts`: per-node facts of a recorded run (token counts, probabilities,
  mask times, the context each node continued from), shared by the exporters.
* :mod:`.otlp`: OTLP spans (GenAI semantic conventions), as OTLP/JSON lines
  (the OpenTelemetry file exporter's layout) or sent as OTLP/HTTP protobuf.
* :mod:`.html`: a self-contained HTML page of the run (token stream coloured
  by probability with a tooltip per token, the program tree, the figures).
* :mod:`.svg`: an SVG picture of the inspector's own screen, drawn headless.
* :mod:`.serve`: the app in a browser, through textual-serve.

``runfacts`` and ``otlp`` never import Textual (nor does ``serve``, which only
starts processes); ``html`` uses the app's colour scale (Textual's colour
maths) and ``svg`` runs the app itself.  Nothing here imports the engines.
"""
