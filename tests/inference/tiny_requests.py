"""The small request most inference tests start from: the tiny model, 128², four Euler steps."""

from bot.request import GenerationRequest


def tiny_request(**fields) -> GenerationRequest:
    values = {
        "prompt": "a red cube on a table",
        "model": "tiny",
        "width": 128,
        "height": 128,
        "steps": 4,
        "seed": 1234,
        "scheduler": "Euler",
    }
    values.update(fields)
    return GenerationRequest(**values)
