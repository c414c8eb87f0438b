"""What every layer of the gateway may use: the ASGI contract (`types`), the error answers
with their documented hierarchy (`errors`), and the histogram features count into
(`histogram`). Imports nothing of the gateway."""
